"""The machine a benchmark ran on, for the figures it prints: one definition for the bench scripts."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (what ``lscpu`` shows as Model name)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_kind() -> str:
    """A short file-name-safe label of this machine's CPU kind, as the result files use:
    ``intel-xeon-avx512bf16-2core``, ``amd-epyc-amx-2core`` (vendor, bf16 matrix unit, cores)."""
    name, flags = cpu_model(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    other = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "cpu"
    vendor = "intel-xeon" if "Xeon" in name else "amd-epyc" if "EPYC" in name else other
    unit = "amx" if "amx_bf16" in flags else "avx512bf16" if "avx512_bf16" in flags else "fp32only"
    return f"{vendor}-{unit}-{os.cpu_count() or 1}core"


def write_report(report: dict, path: Path | None, stem: str) -> Path:
    """Write a benchmark's JSON record to ``path`` (default ``bench_out/<stem>-<cpu kind>-<date>.json``)
    and print where it went with the CPU it ran on (``report`` holds ``cpu_model``, ``cpu_count``, ``date``)."""
    import json

    out = path or Path(__file__).resolve().parents[2] / "bench_out" / f"{stem}-{cpu_kind()}-{report['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"CPU: {report['cpu_model']} ({report['cpu_count']} cores); written {out}")
    return out


def command_line(script: str) -> str:
    """How this benchmark was started, for its record: ``python SCRIPT ARGS`` quoted so it can be rerun."""
    return shlex.join(["python", script, *sys.argv[1:]])


def parse_overrides(items: list[str]) -> dict:
    """``KEY=VALUE`` config overrides from the command line: VALUE as JSON, or as a plain string when it is not JSON
    (a ``$``-expression or an ``@``-reference of MONAI's config syntax)."""
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides
