"""Phantom datasets for training and evaluation: seeded case geometry, generation and manifests.

Everything here is generated from seeds, so a dataset is the same on every machine. Seeds are split
into disjoint ranges (:data:`SEEDS`): training and validation phantoms never share a seed with the
held-out test phantoms or with the demo phantom.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pipelines.bundles.bundle import Bundle, load_bundle
from pipelines.data.manifests.model import write_manifest
from pipelines.data.phantoms.make import make_brain_tumor_phantom, make_ct_phantom
from pipelines.data.phantoms.tissues import BRAIN_STRUCTURES, MR_CONTRASTS
from pipelines.data.phantoms.write import write_nifti, write_nifti_channels

logger = logging.getLogger(__name__)

__all__ = [
    "ABDOMEN_FOV_MM",
    "HEAD_FOV_MM",
    "SEEDS",
    "WIDE_FOV_FRACTION",
    "PhantomCase",
    "brain_case_geometry",
    "bundle_label_ids",
    "ct_case_geometry",
    "make_brain_dataset",
    "make_ct_dataset",
    "make_phantom_dataset",
    "merged_manifest",
    "relocated",
    "scale_geometry",
]

SEEDS: dict[str, range] = {
    "training": range(0, 10_000),
    "validation": range(10_000, 20_000),
    "test": range(50_000, 60_000),
    "demo": range(90_000, 100_000),
}
"""Disjoint seed ranges per use; a split's cases take the first seeds of its range."""

ABDOMEN_FOV_MM = (290.0, 230.0, 190.0)
"""Nominal field of view (mm) of the generated abdominal CT acquisitions, before the ±8 % jitter."""

WIDE_FOV_FRACTION = 0.4
"""Share of CT cases that are wide torso scans instead of abdominal fields of view."""

HEAD_FOV_MM = (200.0, 200.0, 165.0)
"""Nominal field of view (mm) of the generated head MR acquisitions, before the ±8 % jitter."""

_PHANTOM_KINDS = ("ct", "brain")


@dataclass(frozen=True)
class PhantomCase:
    """Geometry of one generated case: array shape (i, j, k), voxel size (mm) and axis codes."""

    seed: int
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    orientation: str


def ct_case_geometry(seed: int) -> PhantomCase:
    """A realistic, seed-determined acquisition: in-plane 1.2–1.8 mm, slices 1.5–3 mm, RAS/LPS/LAS.

    Most fields of view stay near an abdominal one (about 290 x 230 x 190 mm, ±8 %), so voxel
    counts vary with the spacing as they do between scanners and protocols; about 4 in 10 are
    wide torso scans (330-420 mm square in-plane, 250-400 mm long, like a 512 x 512 CT at 0.8 mm),
    so that the model also sees air around the body and long stretches without organs.
    """
    rng = np.random.default_rng([seed, 7])
    inplane = float(rng.uniform(1.2, 1.8))
    spacing = (inplane, inplane, float(rng.uniform(1.5, 3.0)))
    fov = np.asarray(ABDOMEN_FOV_MM) * rng.uniform(0.92, 1.08, 3)
    orientation = ("RAS", "LPS", "LAS")[int(rng.integers(3))]
    if rng.random() < WIDE_FOV_FRACTION:
        side = float(rng.uniform(330.0, 420.0))
        fov = np.array([side, side, float(rng.uniform(250.0, 400.0))])
    shape = tuple(round(f / s) for f, s in zip(fov, spacing, strict=True))
    return PhantomCase(seed, shape, spacing, orientation)  # type: ignore[arg-type]


def brain_case_geometry(seed: int) -> PhantomCase:
    """A realistic, seed-determined head MR acquisition.

    In-plane spacing 0.7–1.2 mm, slices 2–6.5 mm (thin 2D stacks to the thick slices of routine
    brain MR, such as 0.78 x 0.78 x 6.5 mm), a field of view near 200 x 200 x 165 mm (±8 %),
    orientation RAS, LPS or LAS.
    """
    rng = np.random.default_rng([seed, 11])
    inplane = float(rng.uniform(0.7, 1.2))
    spacing = (inplane, inplane, float(rng.uniform(2.0, 6.5)))
    fov = np.asarray(HEAD_FOV_MM) * rng.uniform(0.92, 1.08, 3)
    shape = tuple(max(8, round(float(f) / s)) for f, s in zip(fov, spacing, strict=True))
    orientation = ("RAS", "LPS", "LAS")[int(rng.integers(3))]
    return PhantomCase(seed, shape, spacing, orientation)  # type: ignore[arg-type]


def scale_geometry(case: PhantomCase, fov_scale: float) -> PhantomCase:
    """The same spacing and orientation over ``fov_scale`` times the field of view.

    The phantoms fit their anatomy to the field of view, so a small ``fov_scale`` gives a small,
    complete (shrunken) body: what quick smoke runs of the training scripts use.

    Raises:
        ValueError: ``fov_scale`` is not a number in (0, 1].
    """
    if isinstance(fov_scale, bool) or not isinstance(fov_scale, int | float) or not 0 < fov_scale <= 1:
        raise ValueError(f"fov_scale: expected a number in (0, 1], got {fov_scale!r}")
    if fov_scale == 1:
        return case
    shape = tuple(max(8, round(n * fov_scale)) for n in case.shape)
    return PhantomCase(case.seed, shape, case.spacing_mm, case.orientation)  # type: ignore[arg-type]


def bundle_label_ids(bundle: Bundle) -> dict[str, int]:
    """Structure name -> label id of a bundle's ``channel_def``, background left out."""
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
        The manifest path. Cases already on disk with the same geometry are not generated again.
    """
    return make_phantom_dataset(folder, bundle, counts=counts, kind="ct", name=name)


def _case_on_disk(paths: Sequence[Path], shape: tuple[int, int, int]) -> bool:
    """True when every file exists and the first has the expected spatial shape."""
    if not all(p.is_file() for p in paths):
        return False
    try:
        return tuple(nib.load(paths[0]).shape[:3]) == tuple(shape)
    except Exception:  # a half-written or foreign file: generate it again
        return False


def make_phantom_dataset(
    folder: str | Path,
    bundle: str | Path | Bundle,
    *,
    counts: Mapping[str, int],
    kind: str = "ct",
    name: str | None = None,
    channels: int = 1,
    fov_scale: float = 1.0,
    perirenal_fat: bool = False,
    varied: bool = False,
) -> Path:
    """Generate CT or brain tumour MR phantoms labelled for a bundle and write their manifest.

    Args:
        folder: where ``<split>/<case_id>/`` folders and the manifest go.
        bundle: the bundle whose ``channel_def`` names the labels.
        counts: cases per split, e.g. ``{"training": 24, "validation": 4, "test": 10}``.
        kind: ``"ct"`` (abdominal CT, geometry from :func:`ct_case_geometry`, cases ``ct_<seed>``,
            the same cases as :func:`make_ct_dataset` at ``fov_scale`` 1) or ``"brain"`` (head MR
            with a tumour, geometry from :func:`brain_case_geometry`, cases ``brain_<seed>``).
        name: the manifest's ``name`` and file stem; default ``ct_phantoms`` / ``brain_tumor_phantoms``.
        channels: brain only: MR contrasts per case (1–4, in the order of
            :data:`pipelines.data.phantoms.tissues.MR_CONTRASTS`). One channel is written as
            ``image.nii.gz``; several as ``image_<contrast>.nii.gz`` each, listed in the manifest
            entry's ``image`` (loaded and stacked as channels by ``LoadImaged``).
        fov_scale: shrink the field of view (see :func:`scale_geometry`); 1 for realistic cases.
        perirenal_fat: CT only: kidneys and adrenal glands in their perirenal fat, apart from the liver
            (see :func:`~pipelines.data.phantoms.make.make_ct_phantom`). Cases on disk are recognised by
            their geometry only, so phantoms with and without it belong in different folders.
        varied: brain only: heads with T1-bright scalp fat and diploe and tumours of several kinds (see
            :func:`~pipelines.data.phantoms.make.make_brain_tumor_phantom`); a folder of their own, as above.

    Returns:
        The manifest path. Cases already on disk with the same geometry are not generated again.

    Raises:
        ValueError: unknown ``kind`` or split, ``channels`` or ``perirenal_fat`` with brain phantoms,
            ``varied`` with CT, bad ``fov_scale``.
    """
    if kind not in _PHANTOM_KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(_PHANTOM_KINDS)}")
    if kind == "ct" and channels != 1:
        raise ValueError(f"channels: CT phantoms have one channel, got {channels!r}")
    if kind != "ct" and perirenal_fat:
        raise ValueError("perirenal_fat: only CT phantoms have kidneys")
    if kind != "brain" and varied:
        raise ValueError("varied: only brain phantoms have it")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= len(MR_CONTRASTS):
        raise ValueError(f"channels: expected an int in 1..{len(MR_CONTRASTS)}, got {channels!r}")
    scale_geometry(ct_case_geometry(0), fov_scale)  # validates fov_scale before any work
    folder = Path(folder)
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    name = name or ("ct_phantoms" if kind == "ct" else "brain_tumor_phantoms")
    contrasts = list(MR_CONTRASTS[:channels]) if kind == "brain" else ["CT"]
    modality: dict[str, str] = (
        {"0": "CT"} if kind == "ct" else {str(c): contrast for c, contrast in enumerate(contrasts)}
    )
    image_names = ["image"] if channels == 1 else [f"image_{c.lower()}" for c in contrasts]
    manifest: dict[str, Any] = {
        "name": name,
        "description": f"synthetic {'CT' if kind == 'ct' else 'brain tumour MR'} phantoms from "
        f"pipelines.data.phantoms, labelled for {bundle.name}",
        "modality": modality,
        "labels": {str(k): v for k, v in sorted(bundle.labels.items())},
        "training": [],
        "validation": [],
        "test": [],
    }
    for split, count in counts.items():
        if split not in SEEDS:
            raise ValueError(f"split {split!r}: expected one of {', '.join(SEEDS)}")
        for seed in SEEDS[split][:count]:
            geometry = scale_geometry((ct_case_geometry if kind == "ct" else brain_case_geometry)(seed), fov_scale)
            case_id = f"{kind}_{seed:05d}"
            case_dir = folder / split / case_id
            images = [case_dir / f"{n}.nii.gz" for n in image_names]
            if not _case_on_disk([*images, case_dir / "label.nii.gz"], geometry.shape):
                common = {
                    "shape": geometry.shape,
                    "spacing_mm": geometry.spacing_mm,
                    "orientation": geometry.orientation,
                }
                if kind == "ct":
                    phantom = make_ct_phantom(
                        seed, label_ids=bundle_label_ids(bundle), perirenal_fat=perirenal_fat, **common
                    )
                else:
                    phantom = make_brain_tumor_phantom(seed, channels=channels, varied=varied, **common)
                if channels == 1:
                    write_nifti(phantom, case_dir)
                else:
                    write_nifti_channels(phantom, case_dir, image_names)
                logger.info(
                    "generated %s %s %s mm %s", case_id, geometry.shape, geometry.spacing_mm, geometry.orientation
                )
            rel = [f"{split}/{case_id}/{p.name}" for p in images]
            label = f"{split}/{case_id}/label.nii.gz"
            manifest[split].append({"case_id": case_id, "image": rel[0] if channels == 1 else rel, "label": label})
    return write_manifest(manifest, folder / f"{name}.json")


def make_brain_dataset(
    folder: str | Path,
    bundle: str | Path | Bundle,
    *,
    counts: Mapping[str, int],
    channels: int = 1,
    name: str = "brain_tumor_phantoms",
    fov_scale: float = 1.0,
    varied: bool = False,
) -> Path:
    """Generate brain tumour MR phantoms (label 1 = tumour) and their manifest.

    See :func:`make_phantom_dataset` with ``kind="brain"``; the bundle's ``channel_def`` must name
    label 1 (the phantoms' only structure).
    """
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if set(bundle.labels) - {0} != set(BRAIN_STRUCTURES.values()):
        raise ValueError(
            f"{bundle.root}: brain tumour phantoms label {{1: 'tumor'}}; the bundle's channel_def has "
            f"{ {k: v for k, v in bundle.labels.items() if k} }"
        )
    return make_phantom_dataset(
        folder, bundle, counts=counts, kind="brain", name=name, channels=channels, fov_scale=fov_scale, varied=varied
    )


def relocated(manifest: str | Path, folder: str | Path) -> dict[str, Any]:
    """The manifest's content with every path rewritten relative to ``folder`` (for a copy stored there)."""
    manifest = Path(manifest).resolve()
    data = json.loads(manifest.read_text(encoding="utf-8"))

    def move(value: str) -> str:
        return os.path.relpath((manifest.parent / value).resolve(), Path(folder).resolve())

    for split in ("training", "validation", "test"):
        for i, entry in enumerate(data.get(split, [])):
            if isinstance(entry, str):
                data[split][i] = move(entry)
                continue
            for key in ("image", "label"):
                if isinstance(entry.get(key), str):
                    entry[key] = move(entry[key])
                elif isinstance(entry.get(key), list):
                    entry[key] = [move(v) for v in entry[key]]
    return data


def merged_manifest(parts: Mapping[str, str | Path], path: str | Path) -> Path:
    """One manifest holding every split of several phantom manifests (cases with ids), written to ``path``.

    Each part's case ids get its name as a prefix (``varied_brain_00003``): two kinds of phantoms drawn
    from the same seeds have the same ids. Paths are rewritten relative to ``path``'s folder. The first
    part's name, description, modality and labels head the result; every part must have the same labels.
    """
    path = Path(path)
    merged: dict[str, Any] = {}
    for name, manifest in parts.items():
        data = relocated(manifest, path.parent)
        if not merged:
            merged = {**data, "training": [], "validation": [], "test": []}
        elif data.get("labels") != merged.get("labels"):
            raise ValueError(f"{manifest}: labels {data.get('labels')}, the first part has {merged.get('labels')}")
        for split in ("training", "validation", "test"):
            for entry in data.get(split, []):
                if not isinstance(entry, dict) or "case_id" not in entry:
                    raise ValueError(
                        f"{manifest}: a {split} case without a case_id ({entry!r}); phantom manifests have them"
                    )
                merged[split].append({**entry, "case_id": f"{name}_{entry['case_id']}"})
    return write_manifest(merged, path)
