"""The terminal summary of one segmented case: structures with their confidence, then the QC verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["print_case_summary"]


def _number(value: Any, spec: str) -> str:
    return "-" if value is None else format(float(value), spec)


def print_case_summary(stats: Sequence[Mapping[str, Any]], quality: Mapping[str, Any] | None) -> None:
    """Print one row per structure (volume, mean intensity, confidence, flags) and the QC verdict.

    A flagged case ends with ``QC: FLAGGED`` and one line per reason, so that a result that should
    not be trusted never looks like a clean one.
    """
    if stats:
        width = max(len("structure"), *(len(str(s["name"])) for s in stats))
        print(f"{'structure':<{width}}  {'volume mL':>10}  {'mean':>8}  {'conf':>5}  flags")
        for s in stats:
            flags = ",".join(s.get("flags") or ()) or "-"
            print(
                f"{s['name']:<{width}}  {float(s['volume_ml']):>10.1f}  {float(s['mean']):>8.1f}  "
                f"{_number(s.get('confidence'), '5.2f'):>5}  {flags}"
            )
    if not quality:
        return
    if quality.get("flagged"):
        print("QC: FLAGGED - do not trust this result without review:")
        for reason in quality.get("reasons", []):
            print(f"  - {reason}")
    else:
        print("QC: no flags")
    for warning in quality.get("warnings", []):
        print(f"  note: {warning}")
