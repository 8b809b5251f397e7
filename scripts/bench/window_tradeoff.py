#!/usr/bin/env python
"""Sliding-window trade-off: window size and overlap against compute, memory and accuracy.

The CT U-Net is fully convolutional, so a larger window (up to the whole volume) with a small
overlap computes each voxel fewer times than 96³ windows at overlap 0.5 (about 6 times on the
512x512x200 phantom). This script runs ``medseg segment`` (labels only, default precision) once
per setting and run, each in a fresh process, on a generated phantom whose truth is known, and
reports per setting:

* windows and window voxels computed (per voxel of the preprocessed grid: the redundancy),
* median seconds in inference and in total, median peak RSS,
* Dice per label against the Model Zoo style reference's own map (fp32, 96³, overlap 0.5),
* Dice per label against the phantom's truth.

Windows, voxels and both Dice figures depend only on the input and the setting, not on the
machine; seconds and RSS are this machine's.

    python scripts/bench/window_tradeoff.py                          # default settings, 3 runs each
    python scripts/bench/window_tradeoff.py --settings 96x96x96@0.5 160x160x160@0.25:gaussian --runs 1

A setting is ``HxWxD@OVERLAP`` with an optional ``:constant`` / ``:gaussian`` blending mode
(default: the bundle's). Results go to ``--json`` (default ``bench_out/window_tradeoff.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference_vs_reference import (
    REPO,
    dice_per_label,
    make_inputs,
    run_worker,
    truth_in_bundle_classes,
)

DEFAULT_SETTINGS = (
    "96x96x96@0.5",  # bundle 0.1.0 and the reference
    "96x96x96@0.25",
    "128x128x128@0.25",
    "160x160x160@0.25",
    "160x160x160@0.1",
    "144x144x144@0.1",
    "192x192x192@0.1",
    "288x288x208@0.0",  # the whole preprocessed 273x273x200 phantom in one window (padded to /16)
)


def parse_setting(text: str) -> dict:
    """``"160x160x160@0.25:gaussian"`` -> ``{"roi_size": [160, 160, 160], "overlap": 0.25, "mode": "gaussian"}``."""
    roi, sep, rest = text.partition("@")
    overlap, _, mode = rest.partition(":")
    try:
        size = [int(v) for v in roi.lower().split("x")]
        value = float(overlap)
    except ValueError as err:
        raise ValueError(f"setting {text!r}: expected HxWxD@OVERLAP[:MODE], e.g. 160x160x160@0.25") from err
    if not sep or len(size) != 3 or any(v <= 0 or v % 16 for v in size) or not 0.0 <= value < 1.0:
        raise ValueError(f"setting {text!r}: expected three window sizes divisible by 16 and 0 <= overlap < 1")
    if mode and mode not in ("constant", "gaussian"):
        raise ValueError(f"setting {text!r}: blending mode must be constant or gaussian, not {mode!r}")
    return {"roi_size": size, "overlap": value, **({"mode": mode} if mode else {})}


def inferer_overrides(setting: dict) -> dict:
    """Bundle config overrides setting the bundle's inferer to ``setting``."""
    return {f"inferer#{key}": value for key, value in setting.items()}


def override_args(overrides: dict) -> list[str]:
    """Worker arguments applying bundle config ``overrides``."""
    return [arg for key, value in overrides.items() for arg in ("--override", f"{key}={json.dumps(value)}")]


def overrides_for(setting: dict) -> list[str]:
    """Worker arguments setting the bundle's inferer to ``setting``."""
    return override_args(inferer_overrides(setting))


def heldout_truth(bundle: Path, settings: dict[str, dict], count: int, work: Path, precision: str) -> dict:
    """Mean Dice against the truth per setting on the bundle's held-out test phantoms (seeds 50000+).

    ``settings`` maps a name to the bundle config overrides of that setting (``{}``: the bundle as it is).

    The phantoms have the acquisition mix of the bundle's own test split (in-plane 1.2-1.8 mm,
    abdominal and wide fields of view), so a window setting is also judged on the images the
    bundle's reported metrics come from, not only on the one large phantom.
    """
    from pipelines.data.datasets import make_ct_dataset
    from pipelines.segment import Segmenter, SegmentOptions

    make_ct_dataset(work / "heldout", bundle, counts={"test": count}, name="heldout")
    cases = sorted(p for p in (work / "heldout" / "test").iterdir() if p.is_dir())[:count]
    results: dict[str, dict] = {}
    for text, setting in settings.items():
        options = SegmentOptions(
            device="cpu",
            precision=precision,
            outputs=("labels",),
            overrides=setting,
        )
        segmenter = Segmenter(bundle, options)
        per_label: dict[str, list[float]] = {}
        for case in cases:
            result = segmenter.run(case / "image.nii.gz", work / "heldout_runs" / text / case.name, case_id=case.name)
            for label, value in dice_per_label(Path(result.files["labels"]), case / "label.nii.gz").items():
                per_label.setdefault(label, []).append(value)
        means = {label: statistics.fmean(values) for label, values in sorted(per_label.items())}
        results[text] = {
            "cases": [c.name for c in cases],
            "dice_truth": means,
            "mean_dice_truth": statistics.fmean(means.values()),
        }
        print(f"held-out {text}: mean Dice {results[text]['mean_dice_truth']:.4f}", file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "ct_abdomen_unet")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS))
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per setting on the large phantom (median seconds, RSS); 0: skip it"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="our pipeline's --precision (auto, fp32, bf16)")
    parser.add_argument("--work", type=Path, default=REPO / "bench_out")
    parser.add_argument("--heldout", type=int, default=4, help="held-out test phantoms to judge each setting on")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = {text: parse_setting(text) for text in args.settings}
    source = make_inputs(args.work / "inputs", ["phantom_nifti"], args.work)["phantom_nifti"]
    truth = truth_in_bundle_classes(source.parent / "label.nii.gz", args.bundle, source.parent / "truth_classes.nii.gz")
    runs_dir = args.work / "window_tradeoff"
    reference_labels = runs_dir / "reference" / "labels.json"
    if reference_labels.is_file():  # the reference is fp32 and deterministic: one run serves every setting
        reference = json.loads(reference_labels.read_text())
    else:
        reference = run_worker("reference", source, args.bundle, runs_dir / "reference", args.device, None)
        reference_labels.write_text(json.dumps(reference))
    report: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_start": os.getloadavg()[0],
        },
        "input": os.path.relpath(source, REPO),
        "runs": args.runs,
        "precision_option": args.precision,
        "reference_vs_truth": dice_per_label(Path(reference["labels"]), truth),
        "settings": {},
    }
    for text, setting in settings.items() if args.runs > 0 else ():
        records = []
        for i in range(args.runs):
            out = runs_dir / text.replace(":", "_") / f"run{i}"
            record = run_worker(
                "ours",
                source,
                args.bundle,
                out,
                args.device,
                None,
                extra=[*overrides_for(setting), "--precision", args.precision],
            )
            records.append(record)
            print(
                f"{text} run {i + 1}: {record['seconds']['total']:.1f} s, {record['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
            )
        labels = Path(records[-1]["labels"])
        agreement = dice_per_label(labels, Path(reference["labels"]))
        truth_dice = dice_per_label(labels, truth)
        report["settings"][text] = {
            **setting,
            "windows": records[0]["windows"],
            "window_voxels": records[0]["window_voxels"],
            "seconds_infer": statistics.median(r["seconds"]["infer"] for r in records),
            "seconds_total": statistics.median(r["seconds"]["total"] for r in records),
            "seconds_process": statistics.median(r["seconds"]["process"] for r in records),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in records),
            "precision": records[0]["precision"],
            "dice_agreement": agreement,
            "min_dice_agreement": min(agreement.values()),
            "dice_truth": truth_dice,
            "mean_dice_truth": statistics.fmean(truth_dice.values()),
        }
    if args.heldout > 0:
        heldout = heldout_truth(
            args.bundle,
            {text: inferer_overrides(setting) for text, setting in settings.items()},
            args.heldout,
            args.work / "window_tradeoff",
            args.precision,
        )
        for text, entry in heldout.items():
            report["settings"].setdefault(text, dict(settings[text]))["heldout"] = entry
    report["load_average_1min_at_end"] = os.getloadavg()[0]
    print_table(report)
    target = args.json or args.work / "window_tradeoff.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {target}")
    return 0


def print_table(report: dict) -> None:
    ref_truth = report["reference_vs_truth"]
    print(
        f"input {report['input']}; reference (fp32, 96^3 @ 0.5) vs truth: mean Dice "
        f"{statistics.fmean(ref_truth.values()):.4f}; medians of {report['runs']} runs\n"
    )
    print(
        f"{'setting':<24} {'windows':>7} {'Mvox':>6} {'infer s':>8} {'total s':>8} {'process s':>9} "
        f"{'peak MB':>8} {'min agree':>9} {'truth mean':>10} {'truth min':>9} {'held-out':>8}"
    )
    for text, s in report["settings"].items():
        heldout = f"{s['heldout']['mean_dice_truth']:>8.4f}" if "heldout" in s else f"{'-':>8}"
        if "windows" not in s:
            print(f"{text:<24} {'(large phantom not run)':<88} {heldout}")
            continue
        print(
            f"{text:<24} {s['windows']:>7} {s['window_voxels'] / 1e6:>6.1f} {s['seconds_infer']:>8.2f} "
            f"{s['seconds_total']:>8.2f} {s['seconds_process']:>9.2f} {s['peak_rss_mb']:>8.0f} "
            f"{s['min_dice_agreement']:>9.4f} {s['mean_dice_truth']:>10.4f} {min(s['dice_truth'].values()):>9.4f} "
            f"{heldout}"
        )


if __name__ == "__main__":
    sys.exit(main())
