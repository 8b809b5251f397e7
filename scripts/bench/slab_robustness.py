#!/usr/bin/env python
"""Short z stacks: the CT bundle on synthetic abdomens cut to slabs of 40 and 90 mm, Dice per organ.

Real CTs are often short stacks: a 20-slice series of 2 mm, a 90 mm volume of the upper abdomen.
A network trained on whole abdomens sees, in a slab, organs cut at both ends of the field of view
next to the sliding window's zero padding, a picture it never trained on. This benchmark measures
that on synthetic data only (never real scans), so weights can be compared on it before any real
scan is run:

1. the stage-2 validation abdomens of the CT recipe (``SyntheticPhantomDataset``, seeds from 10000,
   ``anatomy="body"``, ``region="abdomen"``, one fixed randomised appearance each), the same
   samples its ``configs/train_randomised.json`` validates on; or, with ``--manifest``, the cases
   of one split of a phantom manifest (a bundle that trained on the recipe's phantoms, such as the
   UNETR, is measured on its own validation phantoms: the appearance it knows, only the slab new);
2. each one whole, and cut along z to each ``--slabs`` length, the slab's centre drawn (seeded) over
   the z range that holds the bundle's organs, so every slab crosses some of them;
3. ``Segmenter`` (what ``medseg segment`` runs) with each ``--weights`` file in a copy of the bundle;
   Dice per organ against the slab's truth, for the organs present in it, and the organs predicted
   where the truth has none (false organs).

    python scripts/bench/slab_robustness.py                                  # the bundle's weights
    python scripts/bench/slab_robustness.py --weights old=OLD.pt new=NEW.pt  # two weights side by side
    python scripts/bench/slab_robustness.py --perirenal-fat --weights old=OLD.pt new=NEW.pt  # stage 3's abdomens
    python scripts/bench/slab_robustness.py --perirenal-fat --phases non_contrast --offset-hu 0 -20 20
                                                   # unenhanced, and a scanner reading 20 HU low or high
    python scripts/bench/slab_robustness.py --perirenal-fat --renal-sinus varied   # kidneys with larger sinuses
    python scripts/bench/slab_robustness.py --bundle bundles/ct_multiorgan_unetr \
        --manifest data_manifests/ct_multiorgan_phantoms.json --override 'inferer#padding_mode="replicate"'
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model, parse_overrides, write_report

REPO = Path(__file__).resolve().parents[2]
VALIDATION_SEED = 10000  # the stage-2 validation seeds (configs/train_randomised.json)


def coarsen(sample: dict, voxel_mm: float) -> dict:
    """The sample as a scanner reconstructing ``voxel_mm`` isotropic voxels would give it: the image
    smoothed to that resolution (Gaussian, FWHM about one new voxel) and resampled, the label resampled
    by nearest neighbour (MONAI ``GaussianSmooth`` and ``Spacingd``)."""
    import numpy as np
    from monai.transforms import GaussianSmooth, Spacingd

    spacing = np.linalg.norm(np.asarray(sample["image"].affine)[:3, :3], axis=0)
    sigma = [max(0.0, 0.42 * (voxel_mm - s) / s) for s in spacing]  # in source voxels; 0.42 * FWHM = sigma
    image = GaussianSmooth(sigma=sigma)(sample["image"])
    resample = Spacingd(keys=["image", "label"], pixdim=[voxel_mm] * 3, mode=["bilinear", "nearest"])
    return resample({"image": image, "label": sample["label"]})


def synthetic_abdomens(
    bundle: Path,
    samples: int,
    perirenal_fat: bool = False,
    phases: list[str] | None = None,
    renal_sinus: str = "small",
    spleen: str = "typical",
):
    """The stage-2 validation abdomens of the CT recipe, as ``{"image", "label"}`` MetaTensors; with
    ``perirenal_fat``, stage 3's (``configs/train_perirenal.json``): the same seeds, the kidneys in their fat
    (and their renal sinus ``renal_sinus``, see ``make_ct_phantom``); with ``phases``, drawn in those contrast
    phases only (default: every phase, as validation draws them); ``spleen`` as for ``make_ct_phantom``."""
    from pipelines.bundles.bundle import load_bundle
    from pipelines.data.datasets import bundle_label_ids
    from pipelines.data.synthetic import SyntheticPhantomDataset

    dataset = SyntheticPhantomDataset(
        kind="ct",
        num_samples=samples,
        seed=VALIDATION_SEED,
        label_ids=bundle_label_ids(load_bundle(bundle)),
        phantom_options={
            "anatomy": "body",
            "region": "abdomen",
            "perirenal_fat": perirenal_fat,
            **({"renal_sinus": renal_sinus} if perirenal_fat else {}),
            "spleen": spleen,
        },
        appearance={"phases": list(phases)} if phases else None,
    )
    for index in range(samples):
        yield dataset[index]


def manifest_cases(manifest: Path, split: str, samples: int):
    """The first ``samples`` cases of a manifest's split, loaded as MONAI would (channel first, RAS)."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    from pipelines.train import datalist

    cases = datalist(manifest, split)[:samples]
    if not cases:
        raise SystemExit(f"--manifest {manifest}: no cases in its {split!r} split")
    load = Compose(
        [
            LoadImaged(keys=["image", "label"], image_only=True),
            EnsureChannelFirstd(keys=["image", "label"]),
            Orientationd(keys=["image", "label"], axcodes="RAS"),  # axis 2 is z for the cut
        ]
    )
    for case in cases:
        yield load({"image": case["image"], "label": case["label"]})


def make_slabs(
    samples_iter, slabs_mm: list[float], folder: Path, voxel_mm: float = 0.0, offsets_hu: tuple[float, ...] = (0.0,)
) -> list[dict]:
    """Write each abdomen whole and cut to each slab length; return the cases.

    ``voxel_mm`` > 0 coarsens each abdomen to that isotropic voxel size first (:func:`coarsen`). Each
    of ``offsets_hu`` writes every case again with that many HU added to every voxel (clipped at
    -1024 HU): a scanner whose calibration sits that far from the phantoms' literature values."""
    import nibabel as nib
    import numpy as np

    from pipelines.data.phantoms.tissues import CT_CLIP_HU  # the air the phantoms are clipped to

    cases = []
    for index, sample in enumerate(samples_iter):
        if voxel_mm > 0:
            sample = coarsen(sample, voxel_mm)
        affine = np.asarray(sample["image"].affine, dtype=float)
        image = np.asarray(sample["image"][0], dtype=np.float32)
        label = np.asarray(sample["label"][0], dtype=np.uint8)
        spacing_z = float(np.linalg.norm(affine[:3, 2]))
        organ_z = np.flatnonzero(label.any(axis=(0, 1)))
        rng = np.random.default_rng([VALIDATION_SEED, index])
        for length in [0.0, *slabs_mm]:
            depth = label.shape[2] if length <= 0 else min(label.shape[2], max(1, round(length / spacing_z)))
            centre = int(rng.integers(organ_z.min(), organ_z.max() + 1))
            start = int(np.clip(centre - depth // 2, 0, label.shape[2] - depth))
            shifted = affine.copy()
            shifted[:3, 3] = affine[:3, 3] + affine[:3, 2] * start  # the slab keeps its place in space
            for offset in offsets_hu:
                name = f"val{index:02d}_{'whole' if length <= 0 else f'{int(length)}mm'}"
                name += f"_{offset:+g}HU" if offset else ""
                case = folder / name
                case.mkdir(parents=True, exist_ok=True)
                slab = image[:, :, start : start + depth]
                slab = np.maximum(slab + np.float32(offset), np.float32(CT_CLIP_HU[0])) if offset else slab
                nib.save(nib.Nifti1Image(slab, shifted), case / "image.nii.gz")
                nib.save(nib.Nifti1Image(label[:, :, start : start + depth], shifted), case / "label.nii.gz")
                cases.append({"case": name, "slab_mm": length, "offset_hu": offset, "slices": depth, "dir": case})
    return cases


def score(prediction: Path, truth: Path, names: dict[int, str], spacing_ml: float) -> tuple[dict, dict]:
    """Dice per organ present in the truth; predicted mL of organs the truth does not have."""
    import nibabel as nib
    import numpy as np

    pred = np.asarray(nib.load(prediction).dataobj).astype(np.int32)
    true = np.asarray(nib.load(truth).dataobj).astype(np.int32)
    dice, false = {}, {}
    for label, name in names.items():
        p, t = pred == label, true == label
        if t.any():
            dice[name] = float(2 * np.logical_and(p, t).sum() / (p.sum() + t.sum()))
        elif p.any():
            false[name] = round(float(p.sum()) * spacing_ml, 1)
    return dice, false


def main() -> int:
    from pipelines.data.phantoms.variants import RENAL_SINUSES, SPLEENS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "ct_abdomen_unet")
    parser.add_argument("--weights", nargs="+", default=None, help="NAME=PATH (default: the bundle's own weights)")
    parser.add_argument("--samples", type=int, default=6, help="validation abdomens (default 6)")
    parser.add_argument("--slabs", type=float, nargs="+", default=[40.0, 90.0], help="slab lengths in mm")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="inference config override (JSON value)"
    )
    parser.add_argument(
        "--voxel-mm", type=float, default=0.0, help="coarsen the abdomens to this isotropic voxel size first (mm)"
    )
    parser.add_argument(
        "--manifest", type=Path, default=None, help="cut the cases of this phantom manifest instead (see above)"
    )
    parser.add_argument("--split", default="validation", help="the --manifest split (default: validation)")
    parser.add_argument(
        "--perirenal-fat", action="store_true", help="abdomens with the kidneys in their perirenal fat (stage 3's)"
    )
    parser.add_argument(
        "--renal-sinus",
        choices=RENAL_SINUSES,
        default="small",
        help="with --perirenal-fat: the kidneys' renal sinus, small (default) or varied (larger in heavier patients)",
    )
    parser.add_argument(
        "--spleen",
        choices=SPLEENS,
        default="typical",
        help="the abdomens' spleen: typical (default) or varied (larger, longer and lower, see make_ct_phantom)",
    )
    parser.add_argument(
        "--phases", nargs="+", default=None, help="draw the abdomens in these CT phases only (e.g. non_contrast)"
    )
    parser.add_argument(
        "--offset-hu",
        type=float,
        nargs="+",
        default=[0.0],
        help="score each case at each of these global HU offsets, a scanner's calibration (default: 0 only; "
        "list 0 to keep the unshifted cases)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.renal_sinus != "small" and not args.perirenal_fat:
        parser.error("--renal-sinus needs --perirenal-fat: only those kidneys have a sinus")
    overrides = parse_overrides(args.override)
    weights = dict(w.split("=", 1) for w in args.weights) if args.weights else {"bundle": "models/model.pt"}
    for name, path in weights.items():
        path = Path(path) if Path(path).is_absolute() or Path(path).is_file() else args.bundle / path
        if not path.is_file():
            raise SystemExit(f"--weights {name}={path}: no such file")
        weights[name] = str(path)

    import nibabel as nib
    import numpy as np

    from pipelines.bundles.bundle import load_bundle
    from pipelines.segment import Segmenter, SegmentOptions

    names = {i: n for i, n in load_bundle(args.bundle).labels.items() if i != 0}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = (
            synthetic_abdomens(
                args.bundle, args.samples, args.perirenal_fat, args.phases, args.renal_sinus, args.spleen
            )
            if args.manifest is None
            else manifest_cases(args.manifest, args.split, args.samples)
        )
        cases = make_slabs(source, args.slabs, work / "cases", args.voxel_mm, tuple(args.offset_hu))
        for wname, wpath in weights.items():
            copy = work / "bundles" / wname / args.bundle.name
            shutil.copytree(args.bundle, copy, ignore=shutil.ignore_patterns("*.pt", "eval"))
            shutil.copyfile(wpath, copy / "models" / "model.pt")
            segmenter = Segmenter(copy, SegmentOptions(device="cpu", outputs=("labels",), overrides=overrides))
            for case in cases:
                out = work / "runs" / wname / case["case"]
                result = segmenter.run(case["dir"] / "image.nii.gz", out, case_id=case["case"])
                zooms = nib.load(case["dir"] / "label.nii.gz").header.get_zooms()[:3]
                dice, false = score(
                    Path(result.files["labels"]), case["dir"] / "label.nii.gz", names, float(np.prod(zooms)) / 1000
                )
                rows.append(
                    {
                        "weights": wname,
                        "case": case["case"],
                        "slab_mm": case["slab_mm"],
                        "offset_hu": case["offset_hu"],
                        "dice": dice,
                        "false_organs_ml": false,
                    }
                )
    summary: dict[str, dict] = {}
    for wname in weights:
        for length in [0.0, *args.slabs]:
            for offset in args.offset_hu:
                picked = [
                    r for r in rows if r["weights"] == wname and r["slab_mm"] == length and r["offset_hu"] == offset
                ]
                per_organ = {n: [r["dice"][n] for r in picked if n in r["dice"]] for n in names.values()}
                key = ("whole" if length <= 0 else f"{int(length)} mm") + (f" {offset:+g} HU" if offset else "")
                summary.setdefault(wname, {})[key] = {
                    "dice": {n: round(statistics.fmean(v), 3) for n, v in per_organ.items() if v},
                    "organs_scored": sum(len(v) for v in per_organ.values()),
                    "false_organs": sum(len(r["false_organs_ml"]) for r in picked),
                }
    bundle = args.bundle.resolve()
    report = {
        "benchmark": "slab_robustness",
        "date": datetime.date.today().isoformat(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "bundle": str(bundle.relative_to(REPO) if bundle.is_relative_to(REPO) else bundle),
        "weights": {n: Path(p).name for n, p in weights.items()},
        "samples": args.samples,
        "overrides": overrides,
        "voxel_mm": args.voxel_mm or None,
        "validation_seed": VALIDATION_SEED if args.manifest is None else None,
        "perirenal_fat": args.perirenal_fat if args.manifest is None else None,
        "renal_sinus": args.renal_sinus if args.manifest is None and args.perirenal_fat else None,
        "spleen": args.spleen if args.manifest is None else None,
        "phases": args.phases if args.manifest is None else None,
        "offsets_hu": args.offset_hu,
        "manifest": None if args.manifest is None else f"{args.manifest.name}, split {args.split}",
        "summary": summary,
        "cases": rows,
    }
    for wname, by_length in summary.items():
        for key, row in by_length.items():
            organs = "  ".join(f"{n} {d:.3f}" for n, d in row["dice"].items())
            print(f"{wname:>10} {key:>7}: {organs}  (false organs: {row['false_organs']})")
    write_report(report, args.json, "slab-robustness")
    return 0


if __name__ == "__main__":
    sys.exit(main())
