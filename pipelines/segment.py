"""One case end to end: read -> bundle preprocessing -> inference -> bundle postprocessing -> outputs.

``medseg segment``, ``medseg batch`` and ``medseg demo`` all go through :class:`Segmenter`, so a
case is processed the same way whichever command asked for it. The bundle is parsed with MONAI's
``ConfigParser``; only the device (and, for outputs, the folder) is overridden. Stages are separate
methods so that a batch run can overlap them across cases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from monai.transforms import Compose, EnsureChannelFirst, SaveImage, SaveImaged

from pipelines import __version__, keys
from pipelines.bundles.bundle import Bundle, load_bundle, parse_config
from pipelines.bundles.weights import load_network, resolve_checkpoint, torchscript_precision
from pipelines.geometry import lps_to_ras
from pipelines.inference import Predictor, resolve_device, resolve_precision
from pipelines.io import channels as multichannel
from pipelines.io.dicom import plane_geometry
from pipelines.io.dicom_tree import is_dicom_container
from pipelines.io.hashing import input_sha256
from pipelines.io.output_folder import check_output_folder, estimated_case_bytes
from pipelines.io.readers import Volume, read_volume
from pipelines.io.series_rules import SeriesRules, rules_from_bundle
from pipelines.io.slice_geometry import labels_on_planes
from pipelines.io.values import NAN_POLICIES, check_finite
from pipelines.io.writers import Written, current_umask, json_bytes, write_bytes, write_labels
from pipelines.keys import DEFAULT_OUTPUTS, OUTPUTS
from pipelines.outputs.confidence import traced_postprocessing
from pipelines.outputs.quality import banner, read_quality_spec, stats_and_quality
from pipelines.transforms.loading import to_metatensor
from pipelines.tta import check_tta, mirror_axes, resolve_tta, tta_predict

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_OUTPUTS", "OUTPUTS", "CaseResult", "SegmentOptions", "Segmenter", "segment_case"]

STAGES = ("load", "preprocess", "infer", "postprocess", "save")


@dataclass(frozen=True)
class SegmentOptions:
    """What a run decides; everything else comes from the bundle.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :func:`pipelines.inference.resolve_precision`).
        outputs: which of :data:`OUTPUTS` to write; ``labels`` and ``run.json`` are always written.
            ``dicom-seg`` is added automatically for DICOM input when ``outputs`` is None.
        series_uid: for a DICOM folder with several series, the one to read.
        nan_policy: ``refuse`` an input with NaN or infinite voxels (the default), or ``fill`` them
            with the image minimum and record it in run.json (see :func:`pipelines.io.values.check_finite`).
        allow_gaps: DICOM only: interpolate across a gap between slices larger than 3x the median
            instead of refusing the series (see :mod:`pipelines.io.slice_geometry`).
        sw_batch_size: sliding windows per network call; None keeps the bundle's on a GPU and uses 1
            on a CPU, where one window at a time measured fastest (0.037 s per 96³ U-Net window
            against 0.054 s in batches of 4). The result does not depend on it.
    """

    device: str = "auto"
    precision: str = "auto"
    outputs: tuple[str, ...] | None = None
    series_uid: str | None = None
    sw_batch_size: int | None = None
    nan_policy: str = "refuse"
    allow_gaps: bool = False
    series_rules: SeriesRules | None = None  # DICOM series choice; None: the bundle's, else medseg's defaults
    keep_identifiers: bool = False  # recorded in run.json (see pipelines.data.identifiers)
    overrides: dict[str, Any] = field(default_factory=dict)  # --override KEY=VALUE: config id -> value
    tta: str | None = None  # none, flips or full (pipelines.tta); None: the bundle's medseg_tta_default
    channel_grids: str = "refuse"  # multi-channel input on several grids: refuse, or resample (pipelines.io.channels)
    mesh_smoothing: int = 0  # --outputs mesh: Taubin smoothing iterations (pipelines.outputs.meshes; 0: none)

    def __post_init__(self) -> None:
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"NaN policy {self.nan_policy!r}: expected one of {', '.join(NAN_POLICIES)}")
        if self.tta is not None:
            check_tta(self.tta)
        if self.sw_batch_size is not None and self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size {self.sw_batch_size}: expected a positive number of windows per batch")
        for name in self.outputs or ():
            if name not in OUTPUTS:
                raise ValueError(f"output {name!r}: expected some of {', '.join(OUTPUTS)}")


@dataclass
class CaseResult:
    """What one case produced."""

    case_id: str
    case_dir: Path
    files: dict[str, Path]
    seconds: dict[str, float]
    stats: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    """sha256 of each file in ``files`` (same keys), from the bytes its writer wrote."""
    warnings: list[str] = field(default_factory=list)  # one line per output left out (goes to run.json)
    dicom_seg: dict[str, Any] | None = None  # {"written", "filled_type2", "error"} when dicom-seg was asked
    quality: dict[str, Any] | None = None  # confidence and QC flags (pipelines.outputs.quality), in run.json


@dataclass
class Prepared:
    """A case after loading and preprocessing, ready for the network."""

    volume: Volume
    data: dict[str, Any]
    seconds: dict[str, float]
    corrections: list[dict[str, Any]] = field(default_factory=list)
    """What was changed on the input before inference (NaN filled ...); recorded in run.json."""
    signals: Any = None  # confidence maps, clean-up trace, TTA agreement (pipelines.outputs.confidence)


class Segmenter:
    """A bundle loaded once and ready to segment many cases.

    Args:
        bundle: the bundle folder (or an already opened :class:`~pipelines.bundles.Bundle`).
        options: device, precision, outputs, series choice.

    Raises:
        FileNotFoundError: no bundle / no ``configs/inference.json`` / no ``models/model.pt``.
        ValueError: a config or weights file that does not fit.
    """

    def __init__(self, bundle: str | Path | Bundle, options: SegmentOptions | None = None) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.options = options or SegmentOptions()
        metadata_path = str(self.bundle.root / "configs" / "metadata.json")
        self.channel_spec = multichannel.channel_spec(self.bundle.metadata, metadata_path)  # input channels
        self.device = resolve_device(self.options.device)
        self.precision = resolve_precision(self.options.precision, self.device)
        self.series_rules = self.options.series_rules or rules_from_bundle(
            self.bundle.metadata, str(self.bundle.root / "configs" / "metadata.json")
        )
        device_override = {"device": f"$torch.device('{self.device}')"}
        parser = parse_config(self.bundle, "inference", device_override, user_overrides=self.options.overrides)
        self.parser = parser
        # The weights the config names; missing ones fail here, before anything is built.
        self.checkpoint = resolve_checkpoint(parser, self.bundle)
        # We read inputs ourselves (DICOM geometry, checksums while reading), so the bundle's loader
        # is never built: its settings are read from the config and it is replaced by an identity.
        self.loader = take_loader(parser)
        self.preprocessing: Compose = parser.get_parsed_content("preprocessing")
        self.postprocessing: Compose = parser.get_parsed_content("postprocessing")
        self.inferer = parser.get_parsed_content("inferer")
        if hasattr(self.inferer, "sw_batch_size"):
            if self.options.sw_batch_size is not None:
                self.inferer.sw_batch_size = int(self.options.sw_batch_size)
            elif self.device.type == "cpu" and "inferer#sw_batch_size" not in self.options.overrides:
                self.inferer.sw_batch_size = 1
        network, self.weights = load_network(parser, self.bundle, "cpu", self.checkpoint)
        self.weights_sha256 = self.weights.sha256  # hashed from the bytes loaded
        if self.weights.format == "torchscript":
            self.precision = torchscript_precision(self.options.precision, self.precision, self.weights.path)
        self.predictor = Predictor(network, self.inferer, self.device, self.precision)
        self.tta = resolve_tta(self.options.tta, self.bundle.metadata, str(self.bundle.root / "configs/metadata.json"))
        self.qc_spec = read_quality_spec(self.bundle.metadata, str(self.bundle.root / "configs/metadata.json"))
        self._post_steps = Compose(
            [t for t in self.postprocessing.transforms if not isinstance(t, SaveImaged | SaveImage)],
            map_items=self.postprocessing.map_items,
            unpack_items=self.postprocessing.unpack_items,
        )

    # -- stages ------------------------------------------------------------------------------
    def load(self, path: multichannel.InputArg, series_uid: str | None = None) -> Volume:
        """Read the input (file, DICOM, or one image per channel); ``series_uid`` (a manifest case's) wins."""
        uid = series_uid or self.options.series_uid
        inputs = multichannel.channel_inputs(path, self.channel_spec, series_uid=uid)
        read = functools.partial(read_volume, series_uid=uid, allow_gaps=self.options.allow_gaps,
                                 series_rules=self.series_rules)  # fmt: skip
        grids, nan = self.options.channel_grids, self.options.nan_policy
        return multichannel.read_input(inputs, self.channel_spec, read, channel_grids=grids, nan_policy=nan)

    def preprocess(self, volume: Volume) -> dict[str, Any]:
        """Apply the bundle's preprocessing (its loader replaced by our read) to a loaded volume."""
        image = to_metatensor(volume, dtype=monai.utils.get_equivalent_dtype(self.loader.dtype, torch.Tensor))
        if self.loader.ensure_channel_first:
            image = EnsureChannelFirst()(image)
        return self.preprocessing({keys.IMAGE: image})

    def infer(self, data: dict[str, Any]) -> dict[str, Any]:
        """Run the network over the preprocessed image; adds ``pred`` (C, H, W, D) scores."""
        image = data[keys.IMAGE]
        spacing = image.pixdim if isinstance(image, monai.data.MetaTensor) else None
        tta = tta_predict(self.predictor, image.unsqueeze(0), self.tta, spacing, mirror_axes(self.bundle.metadata))
        logits = tta.scores[0]
        pred = monai.data.MetaTensor(logits, meta=image.meta) if isinstance(image, monai.data.MetaTensor) else logits
        return {**data, keys.PRED: pred, keys.TTA: tta}

    def postprocess(self, data: dict[str, Any], volume: Volume, prepared: Prepared | None = None) -> np.ndarray:
        """Run the bundle's postprocessing (without its writer) and return the label map ``(i, j, k)``."""
        out, signals = traced_postprocessing(self._post_steps, data, tta=data.get(keys.TTA))  # confidence, clean-up
        if prepared is not None:
            prepared.signals = signals
        pred = out[keys.PRED]
        array = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        if array.ndim == 4:
            if array.shape[0] != 1:
                raise ValueError(
                    f"{self.bundle.config_path('inference')}: postprocessing returned {array.shape[0]} channels; "
                    "expected one label map (does it end with AsDiscreted(argmax=True)?)"
                )
            array = array[0]
        if tuple(array.shape) != volume.shape:
            raise ValueError(
                f"{self.bundle.config_path('inference')}: postprocessing returned shape {tuple(array.shape)}, "
                f"input {volume.path} has {volume.shape}; the postprocessing must invert the preprocessing (Invertd)"
            )
        if np.issubdtype(array.dtype, np.floating):
            array = np.rint(array)
        high = array.max() if array.size else 0
        return array.astype(np.uint8 if high <= 255 else np.uint16, copy=False)

    # -- one case ----------------------------------------------------------------------------
    def prepare(self, path: multichannel.InputArg, series_uid: str | None = None) -> Prepared:
        """Load and preprocess one input (the part a batch run overlaps with inference)."""
        seconds: dict[str, float] = {}
        with _timed(seconds, "load"):
            volume = self.load(path, series_uid)
            volume, correction = check_finite(volume, self.options.nan_policy)
        with _timed(seconds, "preprocess"):
            data = self.preprocess(volume)
        corrections = [*multichannel.channel_corrections(volume), *([correction] if correction else [])]
        return Prepared(volume, data, seconds, corrections)

    def predict(self, prepared: Prepared) -> np.ndarray:
        """Inference and postprocessing: the label map on the input's grid."""
        with _timed(prepared.seconds, "infer"):
            data = self.infer(prepared.data)
        with _timed(prepared.seconds, "postprocess"):
            labels = self.postprocess(data, prepared.volume, prepared)
        prepared.data = {}  # release the preprocessed image and the score maps
        return labels

    def run(self, path: multichannel.InputArg, output_dir: str | Path, case_id: str | None = None) -> CaseResult:
        """Segment one input (or one image per channel) and write its outputs into ``output_dir/<case_id>/``."""
        inputs = multichannel.channel_inputs(path, self.channel_spec, series_uid=self.options.series_uid)
        case_id = case_id or inputs.case_id
        check_case_id(case_id)
        outputs = self.outputs_for(inputs.paths[0])
        check_output_folder(output_dir)  # before reading: a folder that cannot take results fails at once
        prepared = self.prepare(inputs)
        check_output_folder(output_dir, estimated_case_bytes(int(np.prod(prepared.volume.shape))))
        labels = self.predict(prepared)
        return self.write(prepared, labels, output_dir, case_id, outputs)

    def outputs_for(self, path: Path) -> tuple[str, ...]:
        """The outputs to write for one input: the options' list (``labels`` first) or the defaults.

        Raises:
            ValueError: ``dicom-seg`` asked for an input that is a file, not a DICOM series.
        """
        if self.options.outputs is not None:
            outputs = tuple(dict.fromkeys(("labels", *self.options.outputs)))
            if "dicom-seg" in outputs and not (path.is_dir() or is_dicom_container(path)):
                raise ValueError(
                    f"{path}: DICOM-SEG needs a DICOM series as input, this input is a file; "
                    "drop dicom-seg from --outputs"
                )
            return outputs
        dicom = path.is_dir() or is_dicom_container(path)
        return (*DEFAULT_OUTPUTS, "dicom-seg") if dicom else DEFAULT_OUTPUTS

    def write(
        self,
        prepared: Prepared,
        labels: np.ndarray,
        output_dir: str | Path,
        case_id: str,
        outputs: Sequence[str] = ("labels",),
        input_sha256: str | None = None,
    ) -> CaseResult:
        """Write the outputs of one case. The case folder appears complete or not at all.

        Every file is hashed by the writer that wrote it (``CaseResult.sha256``). ``input_sha256``
        is the input's checksum when the caller has it already; otherwise the reader's is used.
        run.json is written once, last, with the time spent saving the other files.
        """
        volume = prepared.volume
        seconds = prepared.seconds
        result = CaseResult(case_id, Path(output_dir) / case_id, {}, seconds)
        written: dict[str, Written] = {}
        with _staged_case_dir(Path(output_dir), case_id) as staging:
            with _timed(seconds, "save"):
                written["labels"] = write_labels(
                    labels, volume.affine, staging / "labels.nii.gz", header=volume.nifti_header
                )
                self._write_extras(result, written, prepared, labels, staging, case_id, outputs)
            result.provenance = self.provenance(volume, outputs, seconds, input_sha256)
            result.provenance["corrections"] = prepared.corrections
            result.provenance["quality"] = result.quality
            result.provenance["warnings"] = result.warnings
            if result.dicom_seg is not None:
                result.provenance["dicom_seg"] = result.dicom_seg
            written["run"] = write_bytes(json_bytes(result.provenance), staging / "run.json")
        result.files = {k: result.case_dir / w.path.relative_to(staging) for k, w in written.items()}
        result.sha256 = {k: w.sha256 for k, w in written.items()}
        return result

    def _write_extras(
        self,
        result: CaseResult,
        written: dict[str, Written],
        prepared: Prepared,
        labels: np.ndarray,
        staging: Path,
        case_id: str,
        outputs: Sequence[str],
    ) -> None:
        """Statistics, preview and DICOM-SEG, as asked; their modules import matplotlib / highdicom."""
        volume = prepared.volume
        extra = [o for o in outputs if o != "labels"]
        names = self.bundle.labels or {int(v): f"label_{int(v)}" for v in np.unique(labels) if v}
        result.stats, result.quality = stats_and_quality(  # always: QC flags go to run.json and the summary
            labels, volume.array, volume.affine, names, prepared.signals, self.qc_spec,
            input_modality=volume.modality, tta=self.tta,
        )  # fmt: skip
        if "stats" in extra:
            from pipelines.outputs.stats import write_stats

            written["stats_json"], written["stats_csv"] = write_stats(result.stats, staging)
        if "mesh" in extra:
            from pipelines.outputs.meshes import write_meshes

            passes = self.options.mesh_smoothing  # Taubin iterations, 0: none
            written.update(write_meshes(labels, volume.affine, names, staging / "meshes", smoothing_iterations=passes))
        if "preview" in extra:
            from pipelines.outputs.preview import write_preview

            written["preview"] = write_preview(
                volume.array,
                labels,
                volume.affine,
                names,
                staging / "preview.png",
                modality=volume.modality or self.bundle.modality or "CT",
                title=f"{case_id} ({self.bundle.name})",
                banner=banner(result.quality),
            )
        if "dicom-seg" in extra:
            from pipelines.outputs.dicom_seg import write_dicom_seg

            seg_labels, seg_volume = _on_acquired_planes(labels, volume)
            try:
                seg = write_dicom_seg(
                    seg_labels,
                    seg_volume,
                    names,
                    staging / "seg.dcm",
                    algorithm_name=self.bundle.name,
                    algorithm_version=self.bundle.version,
                    source_headers=volume.dicom_headers or None,
                )
            except (ValueError, TypeError, AttributeError, KeyError) as err:
                # highdicom / pydicom refusing this series: keep the other outputs, say why seg.dcm is missing.
                reason = " ".join(str(err).split()) or type(err).__name__
                reason = reason.removeprefix(f"{volume.path}: ")
                message = f"{volume.path}: DICOM-SEG not written ({type(err).__name__}: {reason[:300]})"
                logger.warning("%s; the other outputs are kept", message)
                result.warnings.append(message)
                result.dicom_seg = {"written": False, "filled_type2": [], "error": message}
            else:
                written["dicom_seg"] = seg
                result.dicom_seg = {"written": True, "filled_type2": list(seg.filled_type2), "error": None}

    def provenance(
        self, volume: Volume, outputs: Sequence[str], seconds: dict[str, float], sha256: str | None = None
    ) -> dict[str, Any]:
        """The run.json record: what was read, with which model and software, how long each stage took."""
        return {
            "input": {
                "path": str(volume.path.resolve()),
                "sha256": sha256 or volume.sha256 or input_sha256(volume.path),
                "format": volume.format,
                "series_uid": volume.series_uid,
                "shape": list(volume.shape),
                "spacing_mm": [round(s, 6) for s in volume.spacing_mm],
                # DICOM slices that were uneven or tilted, and how they were put on a regular grid
                "geometry_correction": volume.geometry_correction,
                # DICOM: the rule that chose the series, why each other was skipped, the study UID
                "series_selection": volume.series_selection,
                "channels": volume.channel_record,  # multi-channel: each image's path, sha256, grid handling
            },
            "identifiers_kept": self.options.keep_identifiers,
            "bundle": {
                "name": self.bundle.name,
                "version": self.bundle.version,
                "path": str(self.bundle.root),
                "model_sha256": self.weights_sha256,
                "weights": self.weights.record(self.bundle.root),  # the file the config named, its sha256, key
            },
            "software": software_versions(),
            "device": str(self.device),
            "precision": self.precision,
            # under bf16/fp16 the layers that read the image stay in fp32 (see InputLayersFP32)
            "fp32_layers": self.predictor.fp32_layers,
            "sw_batch_size": getattr(self.inferer, "sw_batch_size", None),
            "options": {**asdict(self.options), "outputs": list(outputs)},
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def segment_case(
    input_path: multichannel.InputArg,
    bundle: str | Path | Bundle,
    output_dir: str | Path,
    *,
    case_id: str | None = None,
    options: SegmentOptions | None = None,
) -> CaseResult:
    """Segment one NIfTI/NRRD/MHA file or DICOM folder with a bundle; see :class:`Segmenter`."""
    # Check the input exists before the (slower) bundle set-up, so a typo fails fast.
    multichannel.check_inputs_exist(input_path)
    return Segmenter(bundle, options).run(input_path, output_dir, case_id)


def _on_acquired_planes(labels: np.ndarray, volume: Volume) -> tuple[np.ndarray, Volume]:
    """The label map and volume as DICOM-SEG needs them: one plane per acquired instance.

    A series whose slices were resampled onto a regular grid (uneven spacing, gantry tilt) has
    labels on that grid; DICOM-SEG frames reference the acquired instances, so each frame takes the
    labels at its instance's own plane (nearest neighbour), and viewers overlay it where it belongs.
    """
    if volume.geometry_correction is None:
        return labels, volume
    positions, row, col, pixel_spacing = plane_geometry(volume.dicom_headers)
    planes = labels_on_planes(labels, volume.affine, positions, row, col, pixel_spacing)
    affine = np.array(volume.affine, dtype=np.float64)
    affine[:3, 2] = lps_to_ras((positions[-1] - positions[0]) / max(len(positions) - 1, 1))
    affine[:3, 3] = lps_to_ras(positions[0])
    return planes, dataclasses.replace(volume, array=planes, affine=affine)


@dataclass(frozen=True)
class LoaderSettings:
    """What the bundle's ``LoadImage``/``LoadImaged`` asks of a read image (MONAI's defaults otherwise)."""

    dtype: Any = np.float32
    ensure_channel_first: bool = False


_LOADERS = ("LoadImaged", "LoadImage")


def _config_item(parser: Any, config_id: str) -> Any:
    try:
        return parser.get(config_id)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def take_loader(parser: Any, config_id: str = "preprocessing#transforms#0") -> LoaderSettings:
    """Read the settings of the bundle's file loader from its config and replace it by ``Identityd``.

    The remaining preprocessing transforms are built as the bundle defines them, so ``Invertd``
    over ``@preprocessing`` still inverts them. The loader itself (and its reader package, e.g.
    ``itk`` for an ``ITKReader``) is never built: medseg reads the input.

    Raises:
        ValueError: the preprocessing does not start with a loader medseg can stand in for.
    """
    parent_id, index = config_id.rsplit("#", 1)
    parent = _config_item(parser, parent_id)
    reference = parent.lstrip("$") if isinstance(parent, str) else ""
    if reference.startswith("@") and reference[1:].replace("#", "").replace("_", "").isalnum():
        # "preprocessing": {"transforms": "$@preprocessing_transforms"}: follow a plain reference
        config_id = f"{reference[1:]}#{index}"
    raw = _config_item(parser, config_id)
    target = str(raw.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(raw, dict) else ""
    if target not in _LOADERS:
        raise ValueError(
            f"{parser.get('bundle_root', 'bundle')}: configs/inference: preprocessing must start with LoadImaged "
            f"(as {config_id}); found {target or raw!r}"
        )
    settings = LoaderSettings(
        dtype=parser.get_parsed_content(f"{config_id}#dtype") if "dtype" in raw else np.float32,
        ensure_channel_first=bool(parser.get_parsed_content(f"{config_id}#ensure_channel_first"))
        if "ensure_channel_first" in raw
        else False,
    )
    parser[config_id] = (
        {"_target_": "Identityd", "keys": raw.get("keys", keys.IMAGE)}
        if target == "LoadImaged"
        else {"_target_": "Identity"}
    )
    return settings


def software_versions() -> dict[str, str]:
    """The versions run.json and a batch's batch.json record."""
    return {
        "medseg": __version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def check_case_id(case_id: str) -> None:
    """A case id names a folder: refuse one with path separators (or ``.``/``..``)."""
    if not case_id or case_id in (".", "..") or "/" in case_id or os.sep in case_id:
        raise ValueError(f"case id {case_id!r}: must be a plain folder name (no path separators)")


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start


@contextlib.contextmanager
def _staged_case_dir(output_dir: Path, case_id: str) -> Iterator[Path]:
    """Yield a hidden staging folder; on success it replaces ``output_dir/case_id`` in one rename."""
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{case_id}.", suffix=".partial", dir=output_dir))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private; the case folder is not
    final = output_dir / case_id
    try:
        yield staging
        if final.exists():
            old = final.with_name(f".{case_id}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    except OSError as err:
        # Disk full, quota, a folder gone read-only: name the output, not the input; keep nothing.
        shutil.rmtree(staging, ignore_errors=True)
        failed = final / Path(err.filename).name if err.filename else final
        raise OSError(
            err.errno, f"{failed}: could not write the case's outputs ({err.strerror or err}); nothing was kept"
        ) from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
