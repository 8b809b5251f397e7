#!/usr/bin/env python
"""Do the QC flags and the confidence tell a bad result from a good one? And what does TTA buy?

Builds CT phantoms (held-out test seeds, 176 x 144 x 96 voxels at 1.5 x 1.5 x 2 mm) and graded
degradations of them (noise, blur, low dose, intensity shift, truncated field of view at two
levels each), an MR phantom of the same anatomy (wrong modality) and a head-only CT, segments each
with the shipped CT bundle (``bundles/ct_abdomen_unet``) and reports:

- AUROC of the case flag (and of each flag and of the lowest structure confidence) for a bad case:
  mean organ Dice < 0.7 (organs: spleen, kidneys, liver; an organ predicted where the truth has
  none scores 0; the MR and head-only inputs count as bad whatever they score);
- Spearman correlation between each predicted structure's confidence and its Dice;
- with ``--tta-cases`` > 0: mean organ Dice with and without ``--tta flips`` on clean and noisy
  phantoms (noise level 0.2), the inference time factor and the Spearman of the TTA agreement with Dice.

    .venv/bin/python scripts/bench/qc_signals.py                      # 3 seeds, about 6 min on 2 cores
    .venv/bin/python scripts/bench/qc_signals.py --seeds 1 --tta-cases 1 --json out.json
    .venv/bin/python scripts/bench/qc_signals.py --bundle bundles/ct_multiorgan_unetr --perirenal-fat --tta-cases 0

The figures go to stdout (with the CPU model) and to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_model  # scripts/bench/machine.py, beside this script

REPO = Path(__file__).resolve().parents[2]

ORGANS = ("spleen", "kidney_right", "kidney_left", "liver")
LEVELS = (0.2, 0.6)
SHAPE, SPACING = (176, 144, 96), (1.5, 1.5, 2.0)
BAD_DICE = 0.7


def dice(pred: np.ndarray, truth: np.ndarray, label: int) -> float | None:
    """Dice of one label; None when it is in neither map; 0 when only in one."""
    p, t = pred == label, truth == label
    total = int(p.sum() + t.sum())
    return None if total == 0 else 2.0 * int((p & t).sum()) / total


def auroc(scores: list[float], bad: list[bool]) -> float:
    """P(score of a bad case > score of a good case), ties counting half (Mann-Whitney U / n1 n2)."""
    from scipy.stats import mannwhitneyu

    positives = [s for s, b in zip(scores, bad, strict=True) if b]
    negatives = [s for s, b in zip(scores, bad, strict=True) if not b]
    if not positives or not negatives:
        return float("nan")
    return float(mannwhitneyu(positives, negatives).statistic / (len(positives) * len(negatives)))


def cases(seeds: list[int], labels: dict[int, str], *, perirenal_fat: bool = False) -> Iterator[tuple[str, Any, bool]]:
    """(name, phantom, wrong input) for every case of the study, drawn one at a time.

    ``perirenal_fat`` draws the CT and MR phantoms with the kidneys and adrenal glands in their
    perirenal fat (``make_ct_phantom(..., perirenal_fat=True)``), the anatomy a bundle trained on it
    (the UNETR's recipe) should be judged on; the head-only CT is the same either way.
    """
    from pipelines.data.phantoms.degrade import DEGRADATIONS, degrade_ct, make_head_ct_phantom
    from pipelines.data.phantoms.make import make_ct_phantom, make_mr_phantom

    ids = {name: label for label, name in labels.items() if label}
    for seed in seeds:
        clean = make_ct_phantom(seed, shape=SHAPE, spacing_mm=SPACING, label_ids=ids, perirenal_fat=perirenal_fat)
        yield f"{seed}_clean", clean, False
        for kind in DEGRADATIONS:
            for level in LEVELS:
                yield f"{seed}_{kind}_{level}", degrade_ct(clean, kind, level, seed), False
        mr_ids = {k: v for k, v in ids.items() if k != "liver_tumor"}
        mr = make_mr_phantom(seed, shape=SHAPE, spacing_mm=SPACING, label_ids=mr_ids, perirenal_fat=perirenal_fat)
        yield f"{seed}_mr", mr, True
        yield f"{seed}_head", make_head_ct_phantom(seed, labels), True


def run_case(segmenter: Any, phantom: Any, name: str, work: Path, labels: dict[int, str]) -> dict[str, Any]:
    import nibabel as nib

    from pipelines.data.phantoms.write import write_nifti

    image_path, _ = write_nifti(phantom, work / name)
    result = segmenter.run(image_path, work / "out", case_id=name)
    pred = np.asarray(nib.load(result.files["labels"]).dataobj)
    organ_dice = {n: dice(pred, phantom.label, k) for k, n in labels.items() if n in ORGANS}
    scored = [v for v in organ_dice.values() if v is not None]
    structures = []
    for entry in result.stats:
        truth_dice = dice(pred, phantom.label, int(entry["label"]))
        structures.append(
            {
                k: entry.get(k)
                for k in ("name", "confidence", "high_entropy_fraction", "tta_agreement", "removed_fraction", "flags")
            }
            | {"dice": truth_dice}
        )
    return {
        "case": name,
        "mean_organ_dice": float(np.mean(scored)) if scored else 0.0,
        "organ_dice": organ_dice,
        "flagged": bool(result.quality["flagged"]),
        "codes": sorted({f["code"] for f in result.quality["flags"] if f["severity"] == "fail"}),
        "structures": structures,
        "infer_seconds": result.seconds.get("infer", 0.0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "ct_abdomen_unet")
    parser.add_argument("--seeds", type=int, default=3, help="test phantoms (default 3)")
    parser.add_argument("--tta-cases", type=int, default=2, help="seeds for the TTA comparison (0: skip)")
    parser.add_argument(
        "--perirenal-fat",
        action="store_true",
        help="test phantoms with the kidneys and adrenal glands in their perirenal fat (the UNETR's recipe)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()

    import torch
    from scipy.stats import spearmanr

    from pipelines.data.datasets import SEEDS
    from pipelines.data.phantoms.degrade import degrade_ct
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.segment import Segmenter, SegmentOptions
    from pipelines.tta import TTA_AXES_KEY

    torch.manual_seed(0)
    start = time.perf_counter()
    plain = Segmenter(args.bundle, SegmentOptions(device="cpu", outputs=("labels",), tta="none"))
    labels = {k: v for k, v in plain.bundle.labels.items() if k}
    seeds = list(SEEDS["test"][: args.seeds])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qc_signals_") as tmp:
        work = Path(tmp)
        for name, phantom, wrong_input in cases(seeds, labels, perirenal_fat=args.perirenal_fat):
            row = run_case(plain, phantom, name, work, labels)
            row["bad"] = wrong_input or row["mean_organ_dice"] < BAD_DICE
            rows.append(row)
            print(
                f"{name:<22} dice {row['mean_organ_dice']:.3f} bad {int(row['bad'])} flagged {int(row['flagged'])} "
                f"{','.join(row['codes'])}",
                flush=True,
            )
        tta_rows: list[dict[str, Any]] = []
        if args.tta_cases:
            # What mirroring would do to this model: its bundle declares no mirror axes (medseg_tta_axes: [],
            # it was trained without flips), so the axes are opened here, in the benchmark only.
            flips = Segmenter(args.bundle, SegmentOptions(device="cpu", outputs=("labels",), tta="none"))
            flips.bundle.metadata[TTA_AXES_KEY] = [0, 1, 2]
            flips.tta = "flips"
            for seed in seeds[: args.tta_cases]:
                clean = make_ct_phantom(
                    seed,
                    shape=SHAPE,
                    spacing_mm=SPACING,
                    label_ids={v: k for k, v in labels.items()},
                    perirenal_fat=args.perirenal_fat,
                )
                for name, phantom in (
                    (f"{seed}_clean", clean),
                    (f"{seed}_noise_{LEVELS[0]}", degrade_ct(clean, "noise", LEVELS[0], seed)),
                ):
                    none = run_case(plain, phantom, f"{name}_none", work, labels)
                    tta = run_case(flips, phantom, f"{name}_flips", work, labels)
                    tta_rows.append({"case": name, "none": none, "flips": tta})
                    print(
                        f"TTA {name:<16} dice none {none['mean_organ_dice']:.3f} flips {tta['mean_organ_dice']:.3f} "
                        f"time x{tta['infer_seconds'] / none['infer_seconds']:.1f}",
                        flush=True,
                    )

    bad = [r["bad"] for r in rows]
    table: dict[str, float] = {"case flag": auroc([float(r["flagged"]) for r in rows], bad)}
    for code in sorted({c for r in rows for c in r["codes"]}):
        table[f"flag {code}"] = auroc([float(code in r["codes"]) for r in rows], bad)
    lowest = [min((s["confidence"] for s in r["structures"] if s["confidence"] is not None), default=0.0) for r in rows]
    table["1 - lowest structure confidence"] = auroc([1.0 - c for c in lowest], bad)
    pairs = [(s["confidence"], s["dice"]) for r in rows for s in r["structures"] if s["confidence"] is not None]
    rho = float(spearmanr(*zip(*pairs, strict=True)).statistic) if len(pairs) > 2 else float("nan")
    flagged_good = sum(r["flagged"] and not r["bad"] for r in rows)
    missed_bad = [r["case"] for r in rows if r["bad"] and not r["flagged"]]

    print(f"\nQC signals on {len(rows)} cases ({sum(bad)} bad: mean organ Dice < {BAD_DICE} or wrong input), "
          f"bundle {plain.bundle.name}, CPU {cpu_model()}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'signal':<34} AUROC")
    for key, value in table.items():
        print(f"{key:<34} {value:.3f}")
    print(f"Spearman(structure confidence, structure Dice) = {rho:.3f} over {len(pairs)} structures")
    print(f"flagged good cases: {flagged_good}; bad cases not flagged: {', '.join(missed_bad) or 'none'}")
    summary: dict[str, Any] = {"auroc": table, "spearman_confidence_dice": rho, "structures": len(pairs)}
    if tta_rows:
        factor = float(np.median([t["flips"]["infer_seconds"] / t["none"]["infer_seconds"] for t in tta_rows]))
        gain = float(np.mean([t["flips"]["mean_organ_dice"] - t["none"]["mean_organ_dice"] for t in tta_rows]))
        agree = [(s["tta_agreement"], s["dice"]) for t in tta_rows for s in t["flips"]["structures"]]
        agree = [(a, d) for a, d in agree if a is not None and d is not None]
        rho_tta = float(spearmanr(*zip(*agree, strict=True)).statistic) if len(agree) > 2 else float("nan")
        print(f"TTA flips: mean organ Dice change {gain:+.4f}, inference time x{factor:.1f} (median), "
              f"Spearman(TTA agreement, Dice) = {rho_tta:.3f} over {len(agree)} structures")  # fmt: skip
        summary["tta"] = {"dice_change": gain, "time_factor": factor, "spearman_agreement_dice": rho_tta}
    print(f"wall time {time.perf_counter() - start:.0f} s")
    if args.json:
        record = {
            "cpu": cpu_model(),
            "perirenal_fat": args.perirenal_fat,
            "summary": summary,
            "cases": rows,
            "tta_cases": tta_rows,
        }
        args.json.write_text(json.dumps(record, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
