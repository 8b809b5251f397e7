#!/usr/bin/env python
"""Evaluate every shipped bundle on the real scans beside the project: Dice and HD95 per structure.

Each bundle (``bundles/*``) runs through medseg's segment pipeline on every real case it applies
to (same modality, a structure in common, one input channel): the CT bundles on ``ct_abdomen_3mm``
(NIfTI) and ``ct_dicom_series`` (a DICOM series), the MRI tumour bundle on ``mri_brain_tumor``.
The prediction is scored against the case's reference label in physical space (resampled onto the
reference grid by world coordinates, nearest neighbour; HD95 in mm). A bundle without weights is
reported as skipped with the reason. The real scans are for evaluation only: never used for
training, thresholds or checkpoint selection.

    .venv/bin/python scripts/evaluate_real_scans.py                      # all bundles, all cases
    .venv/bin/python scripts/evaluate_real_scans.py --bundles bundles/ct_abdomen_unet --cases ct_abdomen_3mm

The data folder is ``../shared/data`` from the repository root, or ``$MEDSEG_SHARED_DATA``, or
``--data``. A table per bundle goes to stdout; the whole record (CPU model, date, bundle versions,
sha256 of each weights file, every structure's figures) to
``scripts/bench/results/real_scans_<cpukind>_<date>.json`` (an existing file is never overwritten:
``-2``, ``-3``... are appended). Exit status 1 when a case failed or no real scan was found.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "bench"))  # machine.py: one definition of the CPU model for benchmarks
from machine import cpu_kind, cpu_model, without_machine_paths  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", type=Path, help="bundle folders (default: every folder in bundles/)")
    parser.add_argument("--cases", nargs="+", help="real cases to run (default: all present)")
    parser.add_argument("--data", type=Path, help="real scans folder (default: $MEDSEG_SHARED_DATA or ../shared/data)")
    parser.add_argument("--output", type=Path, help="keep the predictions here (default: a temporary folder)")
    parser.add_argument("--results", type=Path, default=REPO / "scripts" / "bench" / "results",
                        help="folder for the JSON record (default: scripts/bench/results)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (default: auto)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return parser


def _number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_tables(report: dict[str, Any]) -> None:
    """One table per bundle: case, structure, Dice, HD95 mm, status."""
    for name, reason in report["cases_skipped"].items():
        print(f"case {name} skipped: {reason}")
    for bundle in report["bundles"]:
        weights = bundle["weights"]
        header = f"\n== {bundle['bundle']} {bundle.get('version', '')}"
        print(header + (f"  weights {weights['path']} sha256 {weights['sha256'][:16]}" if weights else ""))
        if bundle["skipped"]:
            print(f"   skipped: {bundle['skipped']}")
        print(f"   {'case':<17} {'structure':<22} {'Dice':>6} {'HD95 mm':>8}  status")
        for case in bundle["cases"]:
            if case["status"] != "scored":
                reason = "the bundle is skipped" if case["reason"] == bundle["skipped"] else case["reason"]
                print(f"   {case['case']:<17} {'':<22} {'':>6} {'':>8}  {case['status']}: {reason}")
                continue
            for s in case["structures"]:
                status = s["status"] if s["status"] != "scored" else ""
                dice, hd95 = _number(s["dice"], 3), _number(s["hd95_mm"], 1)
                print(f"   {case['case']:<17} {s['structure']:<22} {dice:>6} {hd95:>8}  {status}")
            print(f"   {case['case']:<17} ({case['seconds']:.1f} s, {case['device']}, {case['precision']})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from pipelines.evaluation.cases import shared_data_dir
    from pipelines.evaluation.real_scans import evaluate_real_scans, result_path
    from pipelines.io.writers import write_json
    from pipelines.segment import SegmentOptions, software_versions

    data_dir = args.data or shared_data_dir(os.environ, REPO)
    bundles = args.bundles or sorted(p for p in (REPO / "bundles").iterdir() if p.is_dir())
    started = datetime.now(timezone.utc)
    try:
        options = SegmentOptions(device=args.device, precision=args.precision)
        with tempfile.TemporaryDirectory(prefix="real_scans_") as scratch:
            output = args.output or Path(scratch)
            report = evaluate_real_scans(bundles, data_dir, output, case_names=args.cases, options=options)
    except (FileNotFoundError, ValueError) as err:
        print(f"evaluate_real_scans: {err}", file=sys.stderr)
        return 1
    print_tables(report)
    given = argv if argv is not None else sys.argv[1:]
    document = {
        "command": shlex.join(["python", "scripts/evaluate_real_scans.py", *given]),
        "date": started.date().isoformat(),
        "started": started.isoformat(timespec="seconds"),
        "cpu": {"model": cpu_model(), "kind": cpu_kind(), "cores": os.cpu_count()},
        "software": software_versions(),
        "note": "real scans are for evaluation only: never used for training, thresholds or checkpoint selection",
        **report,
    }
    if args.output is None:
        for bundle in document["bundles"]:
            for case in bundle["cases"]:
                case.pop("prediction", None)  # the temporary folder is gone
    args.results.mkdir(parents=True, exist_ok=True)
    path = result_path(args.results, cpu_kind(), started.date())
    roots = {data_dir: "$MEDSEG_SHARED_DATA", REPO: "."}
    if args.output is not None:  # named before REPO: an --output inside the repository stays "$OUTPUT"
        roots = {Path(args.output): "$OUTPUT", **roots}
    # folders outside the repository (a bundle copy with other weights, --results) are named, never this machine's
    outside = {Path(b).resolve().parent: "$BUNDLES" for b in bundles if not Path(b).resolve().is_relative_to(REPO)}
    if not args.results.resolve().is_relative_to(REPO):
        outside[args.results] = "$RESULTS"
    write_json(without_machine_paths(document, {**roots, **outside}), path)
    print(f"\nwrote {path}")
    failed = [f"{b['bundle']} on {c['case']}" for b in report["bundles"] for c in b["cases"] if c["status"] == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
