"""Phantom datasets for training and evaluation, and the one-command demo.

Everything here is generated from seeds, so a dataset or a demo run is the same on every machine.
Seeds are split into disjoint ranges: training and validation phantoms never share a seed with the
held-out test phantoms or with the demo phantom.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import phantoms
from pipelines.bundle import Bundle, load_bundle
from pipelines.io import write_json
from pipelines.manifests import write_manifest

logger = logging.getLogger(__name__)

__all__ = ["SEEDS", "DemoResult", "PhantomCase", "ct_case_geometry", "make_ct_dataset", "run_demo"]

# Disjoint seed ranges (first seed, count available) per use.
SEEDS: dict[str, range] = {
    "training": range(0, 10_000),
    "validation": range(10_000, 20_000),
    "test": range(50_000, 60_000),
    "demo": range(90_000, 100_000),
}
ABDOMEN_FOV_MM = (290.0, 230.0, 190.0)


@dataclass(frozen=True)
class PhantomCase:
    """Geometry of one generated case."""

    seed: int
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    orientation: str


def ct_case_geometry(seed: int) -> PhantomCase:
    """A realistic, seed-determined acquisition: in-plane 1.2–1.8 mm, slices 1.5–3 mm, RAS/LPS/LAS.

    The field of view stays near an abdominal one (about 290 x 230 x 190 mm, ±8 %), so voxel
    counts vary with the spacing as they do between scanners and protocols.
    """
    rng = np.random.default_rng([seed, 7])
    inplane = float(rng.uniform(1.2, 1.8))
    spacing = (inplane, inplane, float(rng.uniform(1.5, 3.0)))
    fov = np.asarray(ABDOMEN_FOV_MM) * rng.uniform(0.92, 1.08, 3)
    shape = tuple(round(f / s) for f, s in zip(fov, spacing, strict=True))
    orientation = ("RAS", "LPS", "LAS")[int(rng.integers(3))]
    return PhantomCase(seed, shape, spacing, orientation)  # type: ignore[arg-type]


def _label_ids(bundle: Bundle) -> dict[str, int]:
    return {name: idx for idx, name in bundle.labels.items() if idx != 0}


def make_ct_dataset(
    folder: str | Path,
    bundle: str | Path | Bundle,
    *,
    counts: Mapping[str, int],
    name: str = "ct_phantoms",
) -> Path:
    """Generate CT phantoms labelled with a bundle's label set and write a manifest for them.

    Args:
        folder: where ``<split>/<case_id>/image.nii.gz`` and ``label.nii.gz`` and the manifest go.
        bundle: the bundle whose ``channel_def`` names the labels (e.g. liver=4, spleen=1).
        counts: cases per split, e.g. ``{"training": 24, "validation": 4, "test": 10}``.
        name: the manifest's ``name``; the file is ``folder/<name>.json``.

    Returns:
        The manifest path. Cases already on disk (same seed and geometry) are not generated again.
    """
    folder = Path(folder)
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    ids = _label_ids(bundle)
    manifest: dict[str, Any] = {
        "name": name,
        "description": f"synthetic CT phantoms from pipelines.phantoms, labelled for {bundle.name}",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in sorted(bundle.labels.items())},
        "training": [],
        "validation": [],
        "test": [],
    }
    for split, count in counts.items():
        if split not in SEEDS:
            raise ValueError(f"split {split!r}: expected one of {', '.join(SEEDS)}")
        for seed in SEEDS[split][:count]:
            geometry = ct_case_geometry(seed)
            case_id = f"ct_{seed:05d}"
            case_dir = folder / split / case_id
            if not ((case_dir / "image.nii.gz").is_file() and (case_dir / "label.nii.gz").is_file()):
                phantom = phantoms.make_ct_phantom(
                    seed,
                    shape=geometry.shape,
                    spacing_mm=geometry.spacing_mm,
                    orientation=geometry.orientation,
                    label_ids=ids,
                )
                phantoms.write_nifti(phantom, case_dir)
                logger.info(
                    "generated %s %s %s mm %s", case_id, geometry.shape, geometry.spacing_mm, geometry.orientation
                )
            manifest[split].append(
                {
                    "case_id": case_id,
                    "image": f"{split}/{case_id}/image.nii.gz",
                    "label": f"{split}/{case_id}/label.nii.gz",
                }
            )
    return write_manifest(manifest, folder / f"{name}.json")


@dataclass
class DemoResult:
    """What the demo produced."""

    output: Path
    dice: dict[str, float]
    mean_dice: float
    metrics_path: Path
    case_dir: Path


def run_demo(
    output: str | Path,
    bundle: str | Path,
    *,
    seed: int = SEEDS["demo"][0],
    device: str = "auto",
    precision: str = "auto",
    outputs: Sequence[str] = ("labels", "stats", "preview"),
) -> DemoResult:
    """Generate a CT phantom, segment it with a bundle, and score the result against the truth.

    Writes ``output/phantom/{image,label}.nii.gz``, the outputs of ``medseg segment`` in
    ``output/<case_id>/`` and ``output/metrics.json`` (Dice per structure, mean over the organs;
    tumour Dice is reported but not part of the organ mean).
    """
    from pipelines.metrics import segmentation_metrics
    from pipelines.segment import Segmenter, SegmentOptions

    output = Path(output)
    segmenter = Segmenter(bundle, SegmentOptions(device=device, precision=precision, outputs=tuple(outputs)))
    geometry = ct_case_geometry(seed)
    phantom = phantoms.make_ct_phantom(
        seed,
        shape=geometry.shape,
        spacing_mm=geometry.spacing_mm,
        orientation=geometry.orientation,
        label_ids=_label_ids(segmenter.bundle),
    )
    image_path, _label_path = phantoms.write_nifti(phantom, output / "phantom")
    result = segmenter.run(image_path, output, case_id="phantom_seg")
    import nibabel as nib

    predicted = np.asarray(nib.load(result.files["labels"]).dataobj)
    names = {k: v for k, v in segmenter.bundle.labels.items() if k != 0}
    spacing = tuple(float(s) for s in np.linalg.norm(phantom.affine[:3, :3], axis=0))
    metrics = segmentation_metrics(predicted, phantom.label, spacing_mm=spacing, labels=names)  # type: ignore[arg-type]
    dice = {name: float(values["dice"]) for name, values in metrics.items()}
    organs = [v for k, v in dice.items() if "tumor" not in k and np.isfinite(v)]
    mean_dice = float(np.mean(organs)) if organs else float("nan")
    record = {
        "dice": dice,
        "mean_dice": mean_dice,
        "mean_dice_over": sorted(k for k in dice if "tumor" not in k),
        "distances_mm": {k: {m: v[m] for m in ("hd95_mm", "asd_mm")} for k, v in metrics.items()},
        "phantom": {
            "seed": seed,
            "shape": list(geometry.shape),
            "spacing_mm": list(geometry.spacing_mm),
            "orientation": geometry.orientation,
        },
        "bundle": {"name": segmenter.bundle.name, "version": segmenter.bundle.version},
        "seconds": result.seconds,
    }
    metrics_path = write_json(record, output / "metrics.json")
    return DemoResult(output, dice, mean_dice, metrics_path, result.case_dir)
