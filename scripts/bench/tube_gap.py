#!/usr/bin/env python
"""Tubular structures kept whole, far islands dropped: ``KeepLargestComponent(max_gap_mm=...)`` on saved predictions.

Applies the clean-up variants to the label maps that ``medseg evaluate`` saved for one split (before
any of them: the bundle's post-processing of that run), scores each against the split's labels on
the prediction's grid, and prints mean Dice and HD95 per structure. Choose on the validation split;
run the test split once, after the choice, through ``medseg evaluate`` itself.

    medseg evaluate --bundle bundles/ct_multiorgan_unetr --manifest M --split validation --output OUT
    python scripts/bench/tube_gap.py --manifest M --predictions OUT --json RESULT.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from machine import command_line, cpu_model, write_record  # noqa: E402

VARIANTS = {
    "largest only (before)": (None, ()),
    "esophagus, 10 mm": (10.0, ("esophagus",)),
    "esophagus, 20 mm": (20.0, ("esophagus",)),
    "esophagus, 30 mm": (30.0, ("esophagus",)),
    "tubes, 20 mm": (20.0, ("esophagus", "aorta", "inferior_vena_cava", "portal_vein")),
    "tubes, 30 mm": (30.0, ("esophagus", "aorta", "inferior_vena_cava", "portal_vein")),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "ct_multiorgan_unetr")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True, help="the --output folder of medseg evaluate")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np

    from pipelines.bundles.bundle import load_bundle
    from pipelines.io.readers import read_volume
    from pipelines.metrics import segmentation_metrics, summarize
    from pipelines.train import datalist
    from pipelines.transforms import KeepLargestComponent

    labels = {i: n for i, n in load_bundle(args.bundle).labels.items() if i != 0}
    ids = {n: i for i, n in labels.items()}
    per_variant: dict[str, dict] = {name: {} for name in VARIANTS}
    for case in datalist(args.manifest, args.split):
        case_id = Path(case["image"]).parent.name
        found = sorted((args.predictions / "predictions" / args.split / case_id).glob("*.nii.gz"))
        if not found:
            raise SystemExit(f"{args.predictions}: no saved prediction of {case_id} (run medseg evaluate first)")
        pred, truth = read_volume(found[0]), read_volume(case["label"])
        for name, (gap, structures) in VARIANTS.items():
            array = np.asarray(pred.array).astype(np.uint8)
            if gap is not None:
                clean = KeepLargestComponent([ids[s] for s in structures], max_gap_mm=gap, spacing_mm=pred.spacing_mm)
                array = clean(array)
            per_variant[name][case_id] = segmentation_metrics(
                array, np.asarray(truth.array).astype(np.uint8), spacing_mm=pred.spacing_mm, labels=labels
            )
    summary = {}
    for name, cases in per_variant.items():
        mean = summarize(cases)
        summary[name] = {"mean_dice": statistics.mean(v["dice"] for v in mean.values()), "per_structure": mean}
        tubes = ", ".join(
            f"{s} {mean[s]['dice']:.3f} ({mean[s]['hd95_mm']:.1f} mm)"
            for s in ("esophagus", "aorta", "inferior_vena_cava", "portal_vein")
        )
        print(f"{name:24s} mean Dice {summary[name]['mean_dice']:.4f}; {tubes}")
    report = {
        "benchmark": "tube_gap",
        "command": command_line("scripts/bench/tube_gap.py"),
        "date": datetime.date.today().isoformat(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "split": args.split,
        "cases": len(next(iter(per_variant.values()))),
        "variants": summary,
    }
    # folders outside the repository are written as placeholders, never as this machine's paths
    write_record(
        report, {args.predictions: "$PREDICTIONS", args.manifest.parent: "$MANIFESTS"}, args.json, "tube-gap", REPO
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
