#!/usr/bin/env python
"""Cropping to the body before the sliding window: windows saved against Dice to the truth.

The CT bundle crops the preprocessed image to its foreground (everything above -175 HU, with a
margin of 8 voxels; ``pipelines.transforms.CropForegroundOrKeepd``) before the sliding window, so
no window is spent on the air around the patient. The windows then sit at other positions, and the
network's output near a window's edge depends on where that edge is, so the label map changes a
little. This script measures by how much, on phantoms whose truth is known:

* the 512x512x200 benchmark phantom (``inference_vs_reference.py``'s), each setting in a fresh
  process: windows, window voxels, seconds in inference, Dice per label against the truth;
* the bundle's held-out test phantoms (seeds 50000+, the split its reported metrics come from):
  mean Dice against the truth per label.

"No crop" is the same bundle with the crop's margin overridden to 100000 voxels, which keeps the
whole image (``allow_smaller``). Results go to ``--json`` (default ``bench_out/body_crop.json``).

    python scripts/bench/body_crop.py --heldout 8 --runs 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference_vs_reference import REPO, cpu_model, dice_per_label, make_inputs, run_worker, truth_in_bundle_classes
from window_tradeoff import heldout_truth, override_args

CROP_TARGET = "pipelines.transforms.CropForegroundOrKeepd"


def crop_margin_key(bundle: Path) -> str:
    """The config path of the crop's margin in the bundle's preprocessing."""
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    for index, item in enumerate(config["preprocessing"]["transforms"]):
        if item.get("_target_") == CROP_TARGET:
            return f"preprocessing#transforms#{index}#margin"
    raise SystemExit(f"{bundle}: no {CROP_TARGET} in inference.json's preprocessing")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "ct_abdomen_unet")
    parser.add_argument("--runs", type=int, default=1, help="runs per setting on the large phantom (0: skip it)")
    parser.add_argument("--heldout", type=int, default=8, help="held-out test phantoms")
    parser.add_argument("--work", type=Path, default=REPO / "bench_out")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    key = crop_margin_key(args.bundle)
    settings = {"crop": {}, "no crop": {key: 100000}}
    report: dict = {"cpu": cpu_model(), "bundle": str(args.bundle.relative_to(REPO)), "settings": {}}

    if args.runs > 0:
        phantom = make_inputs(args.work / "inputs", ["phantom_nifti"], REPO.parent / "shared" / "data")["phantom_nifti"]
        truth = truth_in_bundle_classes(
            phantom.parent / "label.nii.gz", args.bundle, phantom.parent / "truth_classes.nii.gz"
        )
        for name, overrides in settings.items():
            extra = override_args(overrides)
            runs = [
                run_worker(
                    "ours", phantom, args.bundle, args.work / "body_crop" / name.replace(" ", "_"), "cpu", None, extra
                )
                for _ in range(args.runs)
            ]
            dice = dice_per_label(Path(runs[-1]["labels"]), truth)
            report["settings"][name] = {
                "overrides": overrides,
                "windows": runs[-1]["windows"],
                "window_voxels": runs[-1]["window_voxels"],
                "seconds_infer": statistics.median(r["seconds"]["infer"] for r in runs),
                "seconds_process": statistics.median(r["seconds"]["process"] for r in runs),
                "dice_truth": dice,
                "mean_dice_truth": statistics.fmean(dice.values()),
            }
            print(f"large phantom, {name}: {report['settings'][name]}", file=sys.stderr)

    if args.heldout > 0:
        heldout = heldout_truth(args.bundle, settings, args.heldout, args.work / "body_crop", "auto")
        for name, entry in heldout.items():
            report["settings"].setdefault(name, {"overrides": settings[name]})["heldout"] = entry

    out = args.json or args.work / "body_crop.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
