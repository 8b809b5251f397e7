"""A MONAI ``Dataset`` that synthesises every training sample on the fly: a phantom's anatomy with a
randomised appearance (domain randomisation, as SynthSeg trains).

Sample ``index`` in epoch ``epoch``:

1. the anatomy: a phantom of seed ``seed + index`` (with ``redraw_anatomy``: ``seed + epoch *
   num_samples + index``, new bodies every epoch), of a fixed ``shape``/``spacing_mm`` or, when
   ``shape`` is None, of the realistic seed-drawn acquisition of
   :func:`~pipelines.data.datasets.ct_case_geometry` / :func:`~pipelines.data.datasets.brain_case_geometry`;
2. the appearance, drawn from a seed made of ``(seed, index, epoch)``, so it changes every epoch
   and is the same on every run: CT in HU (a random contrast phase of
   :data:`~pipelines.data.appearance.CT_HU_BY_PHASE`, texture, partial volume, blur, slice
   thickness, streaks, rings, metal, noise, optionally a global calibration offset; clipped to
   -1024..3071 HU), MR as float (a random contrast per channel, partial volume, bias field,
   gamma, blur, slice thickness, Rician noise).
   The settings are :class:`~pipelines.data.appearance.CTAppearance` /
   :class:`~pipelines.data.appearance.MRAppearance`, changed with ``appearance`` (plain JSON).

A sample is ``{"image": MetaTensor (C, H, W, D) float32, "label": MetaTensor (1, H, W, D) uint8,
"case_id", "seed", "phase"}`` (``phase`` is the CT phase or ``"random"`` for MR) with the phantom's
affine in the MetaTensors' meta: what ``LoadImaged`` + ``EnsureChannelFirstd`` give, so a bundle's
training transforms from ``Orientationd`` on apply unchanged (CT in HU, so the bundle's own
``ScaleIntensityRanged`` applies). Phantom seeds in the test or demo ranges of
:data:`~pipelines.data.datasets.SEEDS` are refused: validate on ``seed=10000`` (the validation range).

How a bundle's train.json would use it (instead of the manifest-based ``CacheDataset``)::

    "train": {
      "preprocessing": {"_target_": "Compose",
                        "transforms": "$@deterministic_preprocessing[2:] + @train#augmentation"},
      "dataset": {"_target_": "pipelines.data.synthetic.SyntheticPhantomDataset",
                  "kind": "ct", "num_samples": 200, "seed": 0,
                  "label_ids": {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 6},
                  "appearance": {"phases": ["portal_venous", "arterial"], "metal_prob": 0.05},
                  "transform": "@train#preprocessing"},
      ...
    },
    "initialize": ["$@train#trainer.add_event_handler(ignite.engine.Events.EPOCH_STARTED,
                    lambda e: @train#dataset.set_epoch(e.state.epoch))"]

(``[2:]`` drops ``LoadImaged`` and ``EnsureChannelFirstd``: the sample is already loaded.) Without
the ``set_epoch`` hook every epoch sees the same samples. With ``DataLoader`` worker processes,
keep ``persistent_workers`` false so each epoch's workers copy the new epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import Dataset, MetaTensor
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    Randomizable,
    RandRicianNoised,
    RandShiftIntensityd,
    ThresholdIntensityd,
    apply_transform,
)

from pipelines.data.appearance import (
    CTAppearance,
    MRAppearance,
    appearance_settings,
    ct_intensity_table,
    mr_intensity_table,
)
from pipelines.data.datasets import SEEDS, brain_case_geometry, ct_case_geometry
from pipelines.data.phantoms.make import Phantom, make_brain_tumor_phantom, make_ct_phantom, make_mr_phantom
from pipelines.data.phantoms.tissues import CT_CLIP_HU
from pipelines.keys import CASE_ID, IMAGE, LABEL
from pipelines.transforms.randomise import RandPartialVolumed, RandSliceThicknessd, RandTissueIntensityd
from pipelines.transforms.randomise_artefacts import RandMetald, RandRingsd, RandStreaksd

logger = logging.getLogger(__name__)

__all__ = ["KINDS", "SyntheticPhantomDataset"]

KINDS = ("ct", "mr", "brain")
"""What can be synthesised: abdominal CT, abdominal MR (random contrast), brain tumour MR (random contrast)."""

TISSUE = "tissue"
"""Key of the tissue map inside the appearance pipeline (dropped from the sample unless ``keep_tissue``)."""

_DEFAULT_SPACING_MM = {"ct": (1.5, 1.5, 2.0), "mr": (1.5, 1.5, 3.0), "brain": (1.0, 1.0, 4.0)}
"""Voxel size (mm) with a fixed ``shape`` and no ``spacing_mm``: the phantom factories' defaults."""


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"SyntheticPhantomDataset: {name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


class SyntheticPhantomDataset(Dataset):
    """Phantoms with randomised appearance, synthesised per ``__getitem__`` (see the module docstring).

    Args:
        kind: "ct", "mr" (abdominal anatomy) or "brain".
        num_samples: Samples per epoch.
        seed: Base seed (>= 0): phantom seeds start here.
        shape: Fixed array shape (i, j, k); None for the realistic per-seed acquisition geometry.
        spacing_mm: Voxel size (mm) with a fixed ``shape``; default per kind.
        orientation: Axis codes with a fixed ``shape`` (e.g. "RAS", "LPS").
        label_ids: CT/MR: structure name -> label id (names of
            :data:`~pipelines.data.phantoms.tissues.CT_STRUCTURES`); default all of them.
        lesions: CT/MR: draw liver lesions (default: True for CT, False for MR).
        channels: Brain/MR: number of channels, each its own random contrast.
        redraw_anatomy: New phantoms every epoch (needs :meth:`set_epoch`).
        appearance: Overrides of :class:`~pipelines.data.appearance.CTAppearance` (CT) or
            :class:`~pipelines.data.appearance.MRAppearance` (MR, brain) by field name.
        phantom_options: Further keyword arguments of the phantom factory (``make_ct_phantom``,
            ``make_mr_phantom`` or ``make_brain_tumor_phantom``), e.g. ``{"blur_sigma_mm": 0.5}``.
        keep_tissue: Keep the tissue map under ``"tissue"`` (tests, debugging).
        cache_anatomy: Keep each phantom (tissue and label maps) in memory once drawn, so later
            epochs re-draw only the appearance: drawing the anatomy is about 2 of the 5 s a
            realistic CT sample costs on one core. Memory: about 2 bytes per voxel per sample
            (a 250 x 250 x 150 CT: 19 MB). Not with ``redraw_anatomy`` (nothing would be reused).
        transform: Transforms applied after synthesis (a bundle's training preprocessing).

    Raises:
        ValueError: bad kind, counts, seed, geometry, label ids or appearance settings (checked here,
            before any sample is made).
    """

    def __init__(
        self,
        kind: str = "ct",
        num_samples: int = 100,
        seed: int = 0,
        shape: Sequence[int] | None = None,
        spacing_mm: Sequence[float] | None = None,
        orientation: str = "RAS",
        label_ids: Mapping[str, int] | None = None,
        lesions: bool | None = None,
        channels: int = 1,
        redraw_anatomy: bool = False,
        appearance: Mapping[str, Any] | None = None,
        phantom_options: Mapping[str, Any] | None = None,
        keep_tissue: bool = False,
        cache_anatomy: bool = False,
        transform: Any = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"SyntheticPhantomDataset: kind {kind!r}: expected one of {list(KINDS)}")
        self.kind = kind
        self.num_samples = _check_int(num_samples, "num_samples", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.channels = _check_int(channels, "channels", 1)
        if kind == "ct" and self.channels != 1:
            raise ValueError(f"SyntheticPhantomDataset: channels: CT has one channel, got {channels}")
        if shape is None and spacing_mm is not None:
            raise ValueError("SyntheticPhantomDataset: spacing_mm needs a fixed shape (shape=None draws the geometry)")
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        self.spacing_mm = tuple(float(s) for s in (spacing_mm or _DEFAULT_SPACING_MM[kind]))
        self.orientation = orientation
        self.label_ids = None if label_ids is None else {str(k): int(v) for k, v in label_ids.items()}
        if kind == "brain" and label_ids is not None:
            raise ValueError("SyntheticPhantomDataset: label_ids: the brain phantom has one label (tumour = 1)")
        self.lesions = (kind == "ct") if lesions is None else bool(lesions)
        self.redraw_anatomy = bool(redraw_anatomy)
        self.settings = appearance_settings("CT" if kind == "ct" else "MR", appearance)
        self.phantom_options = dict(phantom_options or {})
        own = {"seed", "shape", "spacing_mm", "orientation", "label_ids", "lesions", "channels"}
        reserved = sorted(set(self.phantom_options) & own)
        if reserved:
            raise ValueError(
                f"SyntheticPhantomDataset: phantom_options {reserved} are set by the dataset's own arguments"
            )
        self.keep_tissue = bool(keep_tissue)
        if cache_anatomy and self.redraw_anatomy:
            raise ValueError("SyntheticPhantomDataset: cache_anatomy with redraw_anatomy would reuse nothing")
        self._cache: dict[int, Phantom] | None = {} if cache_anatomy else None
        self.epoch = 0
        self._tables: dict[str, dict[int, tuple[float, float]]] | None = None
        self._tissue_names: dict[int, str] | None = None
        # A first phantom checks the geometry and label ids now, and fixes the tissue names.
        self._phantom(self._phantom_seed(0))
        super().__init__(data=list(range(self.num_samples)), transform=transform)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples ``__getitem__`` gives (appearance, and anatomy with ``redraw_anatomy``)."""
        self.epoch = _check_int(epoch, "epoch", 0)

    # ----------------------------------------------------------------------------------------

    def _phantom_seed(self, index: int) -> int:
        seed = self.seed + index + (self.epoch * self.num_samples if self.redraw_anatomy else 0)
        for held_out in ("test", "demo"):
            if seed in SEEDS[held_out]:
                raise ValueError(
                    f"SyntheticPhantomDataset: phantom seed {seed} is in the {held_out} range "
                    f"{SEEDS[held_out].start}..{SEEDS[held_out].stop - 1}; training and validation must not use it"
                )
        return seed

    def _phantom(self, seed: int) -> Phantom:
        if self._cache is not None and seed in self._cache:
            return self._cache[seed]
        if self.shape is None:
            case = (brain_case_geometry if self.kind == "brain" else ct_case_geometry)(seed)
            grid = {"shape": case.shape, "spacing_mm": case.spacing_mm, "orientation": case.orientation}
        else:
            grid = {"shape": self.shape, "spacing_mm": self.spacing_mm, "orientation": self.orientation}
        grid = {**self.phantom_options, **grid}
        if self.kind == "ct":
            phantom = make_ct_phantom(seed, label_ids=self.label_ids, lesions=self.lesions, noise_hu=0.0, **grid)
        elif self.kind == "mr":
            phantom = make_mr_phantom(seed, label_ids=self.label_ids, lesions=self.lesions, **grid)
        else:
            phantom = make_brain_tumor_phantom(seed, **grid)
        if phantom.tissue is None:
            raise ValueError(f"SyntheticPhantomDataset: the {self.kind} phantom of seed {seed} has no tissue map")
        if self._tissue_names != phantom.tissue_names:
            self._tissue_names = dict(phantom.tissue_names)
            self._tables = self._resolve_tables(self._tissue_names)
        if self._cache is not None:
            self._cache[seed] = phantom
        return phantom

    def _resolve_tables(self, names: Mapping[int, str]) -> dict[str, dict[int, tuple[float, float]]]:
        if isinstance(self.settings, CTAppearance):
            return {phase: ct_intensity_table(names, phase) for phase in self.settings.phases}
        return {"random": mr_intensity_table(names)}

    def _orderings(self) -> list[tuple[int, int]]:
        if not isinstance(self.settings, MRAppearance) or not self.settings.orderings:
            return []
        ids = {name: i for i, name in (self._tissue_names or {}).items()}
        unknown = sorted({n for pair in self.settings.orderings for n in pair} - set(ids))
        if unknown:
            raise ValueError(
                f"SyntheticPhantomDataset: appearance orderings name tissues {unknown} the {self.kind} phantom "
                f"lacks; expected names from {sorted(ids)}"
            )
        return [(ids[a], ids[b]) for a, b in self.settings.orderings]

    def _pipeline(self, spacing: tuple[float, float, float], axis: int) -> Compose:
        """The appearance transforms of one sample (built per sample: thread-safe, nothing shared)."""
        s = self.settings
        tables = self._tables or {}  # set by _phantom
        low, high = s.blur_sigma_mm
        sigma = {f"sigma_{a}": (low / sp, high / sp) for a, sp in zip("xyz", spacing, strict=True)}
        steps: list[Any]
        if isinstance(s, CTAppearance):
            steps = [
                RandTissueIntensityd(TISSUE, tables, IMAGE, "phase", texture_std=s.texture_std_hu),
                RandPartialVolumed(IMAGE, TISSUE, s.partial_volume_sigma_mm),
                RandGaussianSmoothd(IMAGE, prob=s.blur_prob, **sigma),
                RandSliceThicknessd(IMAGE, s.slice_thickness_mm, axis=axis, prob=s.slice_thickness_prob),
                RandStreaksd(IMAGE, axis=axis, prob=s.streak_prob),
                RandRingsd(IMAGE, axis=axis, prob=s.ring_prob),
                RandMetald(IMAGE, axis=axis, prob=s.metal_prob),
                RandGaussianNoised(IMAGE, prob=s.noise_prob, std=s.noise_std_hu, sample_std=True),
                # only when asked: one more randomised step would reseed every step after it
                *([RandShiftIntensityd(IMAGE, offsets=s.offset_hu, prob=s.offset_prob)] if s.offset_prob > 0 else []),
                ThresholdIntensityd(IMAGE, threshold=float(CT_CLIP_HU[0]), above=True, cval=float(CT_CLIP_HU[0])),
                ThresholdIntensityd(IMAGE, threshold=float(CT_CLIP_HU[1]), above=False, cval=float(CT_CLIP_HU[1])),
            ]
        else:
            steps = [
                RandTissueIntensityd(
                    TISSUE,
                    tables,
                    IMAGE,
                    "phase",
                    channels=self.channels,
                    texture_std=s.texture_std,
                    orderings=self._orderings(),
                ),
                ThresholdIntensityd(IMAGE, threshold=0.0, above=True, cval=0.0),  # magnitude images are >= 0
                RandPartialVolumed(IMAGE, TISSUE, s.partial_volume_sigma_mm),
                RandBiasFieldd(IMAGE, degree=3, coeff_range=(-s.bias_coeff, s.bias_coeff), prob=s.bias_prob),
                RandAdjustContrastd(IMAGE, gamma=s.gamma, prob=s.gamma_prob),
                RandGaussianSmoothd(IMAGE, prob=s.blur_prob, **sigma),
                RandSliceThicknessd(IMAGE, s.slice_thickness_mm, axis=None, prob=s.slice_thickness_prob),
                RandRicianNoised(IMAGE, prob=s.noise_prob, std=s.noise_std, sample_std=True),
            ]
        return Compose(steps)

    def synthesise(self, index: int) -> dict[str, Any]:
        """Sample ``index`` of the current epoch, before ``transform`` (see the module docstring)."""
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < self.num_samples:
            raise IndexError(f"SyntheticPhantomDataset: index {index!r} outside 0..{self.num_samples - 1}")
        seed = self._phantom_seed(int(index))
        phantom = self._phantom(seed)
        affine = torch.as_tensor(phantom.affine, dtype=torch.float64)
        case_id = f"synthetic_{self.kind}_{seed:06d}"

        def meta_tensor(array: np.ndarray) -> MetaTensor:
            meta = {"affine": affine.clone(), "original_affine": affine.clone(), "filename_or_obj": case_id}
            meta["spatial_shape"] = np.asarray(array.shape)
            return MetaTensor(torch.from_numpy(np.ascontiguousarray(array[None])), meta=meta)

        data: dict[str, Any] = {
            TISSUE: meta_tensor(phantom.tissue.copy()),  # a copy: a cached phantom must never change
            LABEL: meta_tensor(phantom.label.astype(np.uint8)),
            CASE_ID: case_id,
            "seed": seed,
        }
        spacing = tuple(float(v) for v in np.linalg.norm(phantom.affine[:3, :3], axis=0))
        axis = int(np.argmax(np.abs(phantom.affine[2, :3])))  # the superior-inferior (slice) axis
        pipeline = self._pipeline(spacing, axis)  # type: ignore[arg-type]
        children = np.random.SeedSequence([self.seed, int(index), self.epoch]).generate_state(len(pipeline.transforms))
        for transform, child in zip(pipeline.transforms, children, strict=True):
            if isinstance(transform, Randomizable):
                transform.set_random_state(seed=int(child))
        data = pipeline(data)
        data[IMAGE] = data[IMAGE].float()
        if not self.keep_tissue:
            del data[TISSUE]
        return data

    def _transform(self, index: int) -> Any:
        data = self.synthesise(index)
        return apply_transform(self.transform, data) if self.transform is not None else data
