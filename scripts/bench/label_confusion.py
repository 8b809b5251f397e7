#!/usr/bin/env python
"""Where one structure's truth goes: saved predictions of two or more weights, against the labels of one split.

For each weights' predictions, the structure's truth voxels are counted by the label predicted there (pooled
over the cases), with the median predicted / true volume and the voxels predicted as the structure outside
its truth. With ``--contrast-against``, each case's contrast (the mean of its image's first channel in that
structure minus in this one) is set beside the change in the structure's Dice between the first weights and each other:
the cases are split at the median contrast, and the correlation is given. This is how the CT bundle's docs
found that the spleen-and-sinus runs lose the tumour's rim to the liver, most in faint lesions.

    python scripts/train_ct_unet.py --stage evaluate --bundle B --data-dir D   # saves D/eval/predictions/test
    python scripts/bench/label_confusion.py --manifest D/ct_phantoms.json --structure liver_tumor \\
        --contrast-against liver --predictions 0.5.0=PRED_A experiment=PRED_B --json RESULT.json

Each PRED folder holds ``<case>/*.nii.gz`` on the label's grid (a copy of ``D/eval/predictions/test``, since
the next evaluation overwrites it). The label names come from the manifest.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from machine import command_line, cpu_model, write_record  # noqa: E402


def truth_fates(truth: np.ndarray, pred: np.ndarray, structure: int, n_labels: int) -> np.ndarray:
    """How many of ``structure``'s truth voxels each label was predicted as (index = label id)."""
    return np.bincount(pred[truth == structure].astype(np.int64), minlength=n_labels)


def case_row(truth: np.ndarray, pred: np.ndarray, structure: int, n_labels: int) -> dict:
    """One case: the truth's fates, the true and predicted volumes in voxels, the false voxels, the Dice."""
    fates = truth_fates(truth, pred, structure, n_labels)
    n_truth, n_predicted = int(fates.sum()), int((pred == structure).sum())  # every truth voxel has one fate
    total = n_truth + n_predicted
    return {
        "fates": fates.tolist(),
        "truth_voxels": n_truth,
        "predicted_voxels": n_predicted,
        "false_voxels": n_predicted - int(fates[structure]),
        "dice": 2 * int(fates[structure]) / total if total else 1.0,
    }


def summarise(rows: list[dict], names: dict[int, str]) -> dict:
    """Pooled fates as fractions of every truth voxel, the median volume ratio, the false voxels, the mean Dice."""
    fates = np.sum([r["fates"] for r in rows], axis=0)
    ratios = [r["predicted_voxels"] / r["truth_voxels"] for r in rows if r["truth_voxels"]]
    return {
        "truth_labelled_as": {names[i]: round(float(f / max(fates.sum(), 1)), 3) for i, f in enumerate(fates)},
        "median_predicted_over_true_volume": round(float(np.median(ratios)), 3) if ratios else None,
        "false_voxels": int(sum(r["false_voxels"] for r in rows)),
        "mean_dice": round(float(np.mean([r["dice"] for r in rows])), 4),
    }


def contrast_split(contrast: list[float], dice_before: list[float], dice_after: list[float]) -> dict:
    """The Dice change (after - before) in the cases below and at or above the median contrast, and the
    correlation of contrast and change."""
    c, change = np.asarray(contrast, float), np.asarray(dice_after, float) - np.asarray(dice_before, float)
    low = c < np.median(c)
    return {
        "median_contrast": round(float(np.median(c)), 1),
        "change_low_contrast": round(float(change[low].mean()), 3) if low.any() else None,
        "change_high_contrast": round(float(change[~low].mean()), 3),
        "correlation": round(float(np.corrcoef(c, change)[0, 1]), 3) if c.std() and change.std() else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--structure", required=True, help="a label name of the manifest")
    parser.add_argument("--contrast-against", default=None, help="a second label name: contrast = its mean - ours")
    parser.add_argument("--predictions", nargs="+", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from pipelines.data.manifests.model import load_manifest
    from pipelines.io.readers import read_volume

    try:
        manifest = load_manifest(args.manifest)
        cases = manifest.split(args.split)  # ManifestError is a ValueError, as is an unknown split
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    names = manifest.labels
    ids = {n: i for i, n in names.items()}
    for wanted in (args.structure, args.contrast_against):
        if wanted is not None and wanted not in ids:
            raise SystemExit(f"{args.manifest}: no label {wanted!r}; expected one of {sorted(ids)}")
    if bad := [item for item in args.predictions if "=" not in item]:
        raise SystemExit(f"--predictions {bad[0]}: expected NAME=FOLDER")
    runs = dict(item.split("=", 1) for item in args.predictions)
    if missing := [folder for folder in runs.values() if not Path(folder).is_dir()]:
        raise SystemExit(f"{missing[0]}: no such folder of saved predictions")
    structure, n_labels = ids[args.structure], max(names) + 1
    rows: dict[str, list[dict]] = {name: [] for name in runs}
    contrast: list[float] = []
    for case in cases:
        if case.label is None:
            raise SystemExit(f"{args.manifest}: case {case.case_id} has no label to score against")
        truth = np.asarray(read_volume(case.label).array).astype(np.uint8)
        for name, folder in runs.items():
            found = sorted((Path(folder) / case.case_id).glob("*.nii.gz"))
            if not found:
                raise SystemExit(f"{folder}: no saved prediction of {case.case_id}")
            pred = np.asarray(read_volume(found[0]).array).astype(np.uint8)
            if pred.shape != truth.shape:
                raise SystemExit(f"{found[0]}: shape {pred.shape}, expected the label's {truth.shape}")
            rows[name].append(case_row(truth, pred, structure, n_labels) | {"case": case.case_id})
        if args.contrast_against is not None:
            image = np.asarray(read_volume(case.image_paths[0]).array, dtype=np.float32)
            other, ours = image[truth == ids[args.contrast_against]], image[truth == structure]
            contrast.append(float(other.mean() - ours.mean()) if other.size and ours.size else float("nan"))

    report = {
        "benchmark": "label_confusion",
        "command": command_line("scripts/bench/label_confusion.py"),
        "date": datetime.date.today().isoformat(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "split": args.split,
        "structure": args.structure,
        "cases": len(next(iter(rows.values()))),
        "summary": {name: summarise(r, names) for name, r in rows.items()},
        "per_case": rows,
    }
    for name, summary in report["summary"].items():
        fates = ", ".join(f"{k} {v:.3f}" for k, v in summary["truth_labelled_as"].items() if v)
        print(
            f"{name:>12}: truth labelled {fates}; median volume ratio "
            f"{summary['median_predicted_over_true_volume']}, false voxels {summary['false_voxels']}"
        )
    if args.contrast_against is not None:
        first, *others = runs
        kept = [i for i, c in enumerate(contrast) if np.isfinite(c)]
        report["contrast_against"] = args.contrast_against
        report["contrast"] = {
            f"{other} - {first}": contrast_split(
                [contrast[i] for i in kept],
                [rows[first][i]["dice"] for i in kept],
                [rows[other][i]["dice"] for i in kept],
            )
            for other in others
        }
        for pair, split in report["contrast"].items():
            print(
                f"{pair}: Dice change {split['change_low_contrast']} below the median contrast "
                f"{split['median_contrast']}, {split['change_high_contrast']} above; correlation {split['correlation']}"
            )
    roots = {args.manifest.parent: "$DATA"} | {Path(f): f"$PREDICTIONS_{i}" for i, f in enumerate(runs.values(), 1)}
    write_record(report, roots, args.json, "label-confusion", REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
