#!/usr/bin/env python
"""Start-up benchmark: how fast ``medseg`` answers ``--help``, ``segment --help`` and a usage error.

Each command runs in a fresh process; wall time (``perf_counter`` around the whole process, the
interpreter's start included) and peak resident memory (``ru_maxrss`` of that one child, read
with ``os.wait4``) are recorded, and the median over ``--runs`` is reported. A separate probe
lists which heavy libraries (torch, MONAI, nibabel, ...) the command line has imported after
parsing ``--help``: none is the goal (issue #14: under 0.5 s and under 100 MB).

    python scripts/bench/startup.py                      # 5 runs each, python -m pipelines
    python scripts/bench/startup.py --runs 9 --json bench_out/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "monai", "nibabel", "SimpleITK", "pydicom", "highdicom", "scipy", "matplotlib", "numpy")
COMMANDS = {
    "help": ["--help"],
    "segment_help": ["segment", "--help"],
    "usage_error": ["segment"],  # no input: argparse refuses with exit status 2
}
LIMIT_S, LIMIT_MB = 0.5, 100.0

_PROBE = """
import sys
from pipelines.cli.main import main
try:
    main(["--help"])
except SystemExit:
    pass
heavy = {heavy!r}
print(sorted(m for m in heavy if m in sys.modules))
"""


def time_command(argv: list[str]) -> tuple[float, float, int]:
    """Run one command in a fresh process; returns (wall seconds, peak RSS MiB, exit status)."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024.0, child.returncode  # Linux: ru_maxrss in KiB


def heavy_modules_after_help() -> list[str]:
    """Heavy libraries present in ``sys.modules`` after ``medseg --help`` has been parsed."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY)], capture_output=True, text=True, cwd=REPO, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per command (median reported)")
    parser.add_argument(
        "--entry",
        choices=("module", "script"),
        default="module",
        help="'module': python -m pipelines; 'script': the installed medseg console script next to python",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args()
    if args.entry == "module":
        base = [sys.executable, "-m", "pipelines"]
    else:
        script = Path(sys.executable).with_name("medseg")
        if not script.is_file():
            parser.error(f"{script} not found: install the package (pip install -e .) or use --entry module")
        base = [str(script)]
    results: dict[str, dict] = {}
    for name, extra in COMMANDS.items():
        walls, peaks, codes = [], [], set()
        for _ in range(args.runs):
            wall, peak, code = time_command(base + extra)
            walls.append(wall)
            peaks.append(peak)
            codes.add(code)
        results[name] = {
            "argv": " ".join(["medseg", *extra]),
            "seconds_median": statistics.median(walls),
            "seconds_max": max(walls),
            "peak_rss_mb_median": statistics.median(peaks),
            "exit_codes": sorted(codes),
        }
    heavy = heavy_modules_after_help()
    load = os.getloadavg()
    report = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average_1min": load[0]},
        "entry": " ".join(Path(p).name if i == 0 else p for i, p in enumerate(base)),
        "runs": args.runs,
        "commands": results,
        "heavy_modules_after_help": heavy,
        "limits": {"seconds": LIMIT_S, "peak_rss_mb": LIMIT_MB},
        "within_limits": all(
            r["seconds_median"] < LIMIT_S and r["peak_rss_mb_median"] < LIMIT_MB for r in results.values()
        )
        and not heavy,
    }
    print(f"{'command':<24} {'median s':>9} {'max s':>7} {'peak MB':>8} {'exit':>5}")
    for r in results.values():
        codes = ",".join(str(c) for c in r["exit_codes"])
        print(
            f"{r['argv']:<24} {r['seconds_median']:>9.3f} {r['seconds_max']:>7.3f} {r['peak_rss_mb_median']:>8.1f} "
            f"{codes:>5}"
        )
    print(f"heavy libraries imported by --help: {', '.join(heavy) or 'none'}; load average {load[0]:.1f}")
    print(f"within {LIMIT_S} s and {LIMIT_MB:.0f} MB: {'yes' if report['within_limits'] else 'NO'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if report["within_limits"] else 1


if __name__ == "__main__":
    sys.exit(main())
