"""The machine a benchmark ran on, for the figures it prints: one definition for the bench scripts."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
from collections.abc import Mapping
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


def outside_repository(roots: Mapping[Path, str], repo: Path) -> dict[Path, str]:
    """Of a record's folder placeholders, those to use: the repository's own ("."), and every folder outside it.
    A folder inside the repository is then shown from "." like any other repository path."""
    return {root: name for root, name in roots.items() if root == repo or not Path(root).resolve().is_relative_to(repo)}


def write_record(report: dict, roots: Mapping[Path, str], path: Path | None, stem: str, repo: Path) -> Path:
    """``write_report`` of ``report`` with the folders in ``roots``, the JSON's own folder (``$JSON_DIR``) and the
    repository (".") written as placeholders, never as this machine's paths."""
    roots = {**roots, repo: "."} | ({path.parent: "$JSON_DIR"} if path is not None else {})
    return write_report(without_machine_paths(report, outside_repository(roots, repo)), path, stem)


def without_machine_paths(value, roots: Mapping[Path, str]):
    """``value`` (a record: dicts, lists, strings) with every path under a root written from that root's
    placeholder (``$RESULTS/x.json``, ``./data_manifests/...``), so that a committed record names no machine.

    The longest root goes first, so that a folder inside another (an output folder inside the repository)
    keeps its own placeholder. Each root is matched resolved, and as given when that is absolute too (a
    relative path names no machine, and replacing it would rewrite any text that happens to contain it).
    """
    ordered = sorted(roots.items(), key=lambda item: -len(str(Path(item[0]).resolve())))
    forms = [
        (form, name)
        for root, name in ordered
        for form in dict.fromkeys((str(Path(root).resolve()), str(root) if Path(root).is_absolute() else None))
        if form is not None
    ]

    def shown(item):
        if isinstance(item, Mapping):
            return {key: shown(v) for key, v in item.items()}
        if isinstance(item, list | tuple):
            return [shown(v) for v in item]
        if isinstance(item, str):
            for form, name in forms:
                item = item.replace(form, name)
        return item

    return shown(value)
