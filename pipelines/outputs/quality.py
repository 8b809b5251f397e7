"""QC flags: per structure and per case, each with its reason in words.

What a bundle declares in its ``configs/metadata.json`` (all optional; README "QC flags" documents them)::

    "medseg_qc": {
        "expected_structures": ["liver", "spleen"],          # missing one flags the case
        "volume_ml": {"liver": [600, 3500]},                # plausible range per structure (mL)
        "input_range": [-1024, 3071],                       # 0.5th..99.5th percentile must lie inside (null: open)
        "input_background_at_most": -500,                   # 1st percentile at most this (CT: air at -1000 HU)
        "min_confidence": 0.9,                              # mean max class probability inside a structure
        "max_high_entropy_fraction": 0.25,                  # share of a structure's voxels above the entropy threshold
        "min_tta_agreement": 0.8,                           # mean pairwise Dice between TTA passes
        "max_removed_fraction": 0.2,                        # share of a structure removed as islands by the clean-up
        "min_edge_area_fraction": 0.2,                      # truncation: cut face vs. largest cross-section
        "min_depth_mm": {"tumor": 8},                       # median depth under the body's surface at least
        "structures": {"liver_tumor": {"min_confidence": 0.5}}  # per-structure overrides of the five above
    }

``structures`` overrides any of the per-structure thresholds (``min_confidence``,
``max_high_entropy_fraction``, ``min_tta_agreement``, ``max_removed_fraction``,
``min_edge_area_fraction``) for one structure, e.g. a lower confidence bar for a small lesion, whose
voxels are mostly boundary; ``scripts/bench/qc_calibrate.py`` chooses them on calibration phantoms.

The input's modality is checked against ``network_data_format.inputs.image.modality`` when the input
says what it is (DICOM). Flags of severity ``fail`` make the case *flagged* (do not trust the
result); ``warn`` flags are reported the same way (terminal, stats, run.json ``warnings``, report)
but do not flag the case: an organ cut by the edge of the field of view (``truncated``: its volume is
unreliable, its outline may be fine), and a volume outside the plausible range of an organ so cut
(``volume_range`` with severity ``warn``: a cut organ is expected to be small).

``min_depth_mm`` is for structures that cannot reach the skin (a brain tumour lies inside the skull): a
structure whose voxels lie a median depth under the body's surface below the value is flagged
``too_superficial``, whatever the network's confidence (:mod:`pipelines.outputs.depth` finds the body
from the input).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.geometry import spacing_from_affine
from pipelines.outputs.confidence import (
    ENTROPY_THRESHOLD_NATS,
    PostprocessSignals,
    removed_fractions,
    structure_confidence,
)

logger = logging.getLogger(__name__)

__all__ = ["QC_KEY", "QualitySpec", "assess_case", "banner", "input_flags", "read_quality_spec", "stats_and_quality"]

QC_KEY = "medseg_qc"
"""The ``metadata.json`` key holding a bundle's QC declarations."""

_NUMBERS = (
    "min_confidence",
    "max_high_entropy_fraction",
    "min_tta_agreement",
    "max_removed_fraction",
    "min_edge_area_fraction",
    "input_background_at_most",
)
_PER_STRUCTURE = (
    "min_confidence",
    "max_high_entropy_fraction",
    "min_tta_agreement",
    "max_removed_fraction",
    "min_edge_area_fraction",
)


@dataclass(frozen=True)
class QualitySpec:
    """A bundle's QC declarations (see the module docstring); defaults apply where it declares nothing."""

    modality: str = ""
    expected_structures: tuple[str, ...] = ()
    volume_ml: dict[str, tuple[float, float]] = field(default_factory=dict)
    input_range: tuple[float | None, float | None] = (None, None)
    input_background_at_most: float | None = None
    min_confidence: float = 0.85
    max_high_entropy_fraction: float = 0.3
    min_tta_agreement: float = 0.8
    max_removed_fraction: float = 0.2
    min_edge_area_fraction: float = 0.2
    entropy_threshold_nats: float = ENTROPY_THRESHOLD_NATS
    structures: dict[str, dict[str, float]] = field(default_factory=dict)
    min_depth_mm: dict[str, float] = field(default_factory=dict)

    def threshold(self, structure: str, key: str) -> float:
        """Threshold ``key`` (a per-structure key) for ``structure``: its override, else the case-wide value."""
        return self.structures.get(structure, {}).get(key, getattr(self, key))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def read_quality_spec(metadata: Mapping[str, Any], where: str = "metadata.json") -> QualitySpec:
    """The :class:`QualitySpec` of a bundle's metadata.

    Raises:
        ValueError: a ``medseg_qc`` entry of the wrong type, naming the file and the key.
    """
    image = metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
    modality = str(image.get("modality", "") if isinstance(image, Mapping) else "").upper()
    raw = metadata.get(QC_KEY, {})
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: {QC_KEY} must be an object, got {type(raw).__name__}")
    expected = raw.get("expected_structures", [])
    if not isinstance(expected, list) or not all(isinstance(n, str) for n in expected):
        raise ValueError(f"{where}: {QC_KEY}.expected_structures must be a list of structure names, got {expected!r}")
    volumes: dict[str, tuple[float, float]] = {}
    for name, bounds in dict(raw.get("volume_ml", {})).items():
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise ValueError(f"{where}: {QC_KEY}.volume_ml.{name}: expected [min_ml, max_ml], got {bounds!r}")
        low, high = (_number(b, f"{where}: {QC_KEY}.volume_ml.{name}") for b in bounds)
        if not 0 <= low <= high:
            raise ValueError(f"{where}: {QC_KEY}.volume_ml.{name}: expected 0 <= min <= max, got {bounds!r}")
        volumes[name] = (low, high)
    span = raw.get("input_range", [None, None])
    if not isinstance(span, list) or len(span) != 2:
        raise ValueError(f"{where}: {QC_KEY}.input_range: expected [low, high] (null for open), got {span!r}")
    bounds = tuple(None if b is None else _number(b, f"{where}: {QC_KEY}.input_range") for b in span)
    numbers = {k: _number(raw[k], f"{where}: {QC_KEY}.{k}") for k in _NUMBERS if raw.get(k) is not None}
    depths = raw.get("min_depth_mm", {})
    if not isinstance(depths, Mapping):
        raise ValueError(f"{where}: {QC_KEY}.min_depth_mm: expected {{structure: mm}}, got {depths!r}")
    depth = {str(n): _number(v, f"{where}: {QC_KEY}.min_depth_mm.{n}") for n, v in depths.items()}
    if any(v < 0 for v in depth.values()):
        raise ValueError(f"{where}: {QC_KEY}.min_depth_mm: expected depths >= 0 mm, got {dict(depths)!r}")
    return QualitySpec(
        modality=modality,
        expected_structures=tuple(expected),
        volume_ml=volumes,
        input_range=bounds,  # type: ignore[arg-type]
        structures=_per_structure(raw.get("structures", {}), where),
        min_depth_mm=depth,
        **numbers,  # type: ignore[arg-type]
    )


def _per_structure(raw: Any, where: str) -> dict[str, dict[str, float]]:
    """``medseg_qc.structures``: {name: {threshold key: number}}, checked key by key."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: {QC_KEY}.structures must be an object {{name: {{threshold: number}}}}, got {raw!r}")
    out: dict[str, dict[str, float]] = {}
    for name, values in raw.items():
        if not isinstance(values, Mapping):
            raise ValueError(f"{where}: {QC_KEY}.structures.{name} must be an object of thresholds, got {values!r}")
        unknown = sorted(set(values) - set(_PER_STRUCTURE))
        if unknown:
            raise ValueError(
                f"{where}: {QC_KEY}.structures.{name}: unknown threshold(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(_PER_STRUCTURE)}"
            )
        out[str(name)] = {k: _number(v, f"{where}: {QC_KEY}.structures.{name}.{k}") for k, v in values.items()}
    return out


def _flag(code: str, reason: str, structure: str | None = None, severity: str = "fail") -> dict[str, Any]:
    return {"code": code, "severity": severity, "structure": structure, "reason": reason}


def input_flags(image: np.ndarray, input_modality: str, spec: QualitySpec) -> list[dict[str, Any]]:
    """Case-level checks of the input against the bundle's declared modality and intensity range.

    Percentiles come from a strided subsample of at most ~2 million voxels (the same figures within
    a voxel's worth, without sorting a whole CT).
    """
    flags: list[dict[str, Any]] = []
    if input_modality and spec.modality and input_modality.upper() != spec.modality:
        flags.append(
            _flag(
                "input_modality",
                f"the input is {input_modality.upper()} (its DICOM header says so); the model expects {spec.modality}",
            )
        )
    low, high = spec.input_range
    if low is None and high is None and spec.input_background_at_most is None:
        return flags
    from pipelines.foreground import finite_sample

    sample = finite_sample(image)
    if not sample.size:
        return flags
    p_low, p1, p_high = np.percentile(sample, [0.5, 1.0, 99.5])
    units = " HU" if spec.modality == "CT" else ""
    if (low is not None and p_low < low) or (high is not None and p_high > high):
        flags.append(
            _flag(
                "input_intensity",
                f"intensities run {p_low:.4g}..{p_high:.4g}{units} (0.5th-99.5th percentile), outside the "
                f"{_bound(low)}..{_bound(high)}{units} the model expects",
            )
        )
    if spec.input_background_at_most is not None and p1 > spec.input_background_at_most:
        what = "no air (about -1000 HU) around or inside the body: an MR image, or a CT window that is not HU?"
        flags.append(
            _flag(
                "input_intensity",
                f"the darkest 1% of voxels are above {spec.input_background_at_most:g}{units} (1st percentile "
                f"{p1:.4g}{units}); " + (what if spec.modality == "CT" else "not the background the model expects"),
            )
        )
    return flags


def _bound(value: float | None) -> str:
    return "any" if value is None else f"{value:g}"


def _edge_flag(labels: np.ndarray, label: int, box: Sequence[Sequence[int]], minimum: float) -> str | None:
    """A reason when the structure is cut by a face of the field of view with a cut face >= ``minimum``."""
    for axis, (lo, hi) in enumerate(box):
        for index, side in ((lo, 0), (hi, labels.shape[axis] - 1)):
            if index != side:
                continue
            sub = [slice(a, b + 1) for a, b in box]
            mask = labels[tuple(sub)] == label
            areas = mask.sum(axis=tuple(a for a in range(3) if a != axis))
            face = areas[0] if side == 0 else areas[-1]
            if areas.max() and face / areas.max() >= minimum:
                return (
                    f"cut by the edge of the field of view (axis {'ijk'[axis]}, slice {index}: a cut face of "
                    f"{face / areas.max():.0%} of its largest cross-section); its volume is unreliable"
                )
    return None


def assess_case(
    stats: list[dict[str, Any]],
    labels: np.ndarray,
    signals: PostprocessSignals | None,
    spec: QualitySpec,
    *,
    image: np.ndarray,
    input_modality: str = "",
    tta: str = "none",
    spacing: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Per-structure confidence and QC flags of one case; adds them to each ``stats`` entry in place.

    Each stats entry gains ``confidence``, ``high_entropy_fraction``, ``tta_agreement`` (None without
    TTA or scores), ``removed_fraction`` (None without a clean-up) and ``flags`` (list of codes) and
    ``qc`` (the reasons, in words).

    Args:
        stats: :func:`~pipelines.outputs.stats.compute_stats` of the final label map.
        labels: the final label map ``(i, j, k)`` on the input's grid.
        signals: what the postprocessing left (confidence maps, clean-up, TTA agreement), or None.
        spec: the bundle's declarations.
        image: the input image ``(i, j, k)`` (for the input checks).
        input_modality: what the input says it is (DICOM Modality), ``""`` when unknown.
        tta: the TTA mode of the run.
        spacing: the grid's voxel spacing in mm (for ``min_depth_mm``; without it that check is skipped).

    Returns:
        The run.json ``quality`` record: ``flagged``, ``reasons`` (fail flags in words), ``warnings``,
        ``flags`` (every flag: code, severity, structure, reason), the thresholds used and the TTA mode.
    """
    flags = input_flags(image, input_modality, spec)
    confidence = (
        structure_confidence(labels, signals.confidence, spec.entropy_threshold_nats)
        if (signals and signals.confidence is not None)
        else {}
    )
    removed = (
        removed_fractions(signals.before_cleanup, signals.after_cleanup)
        if signals is not None and signals.before_cleanup is not None and signals.after_cleanup is not None
        else {}
    )
    agreement = signals.tta_agreement if signals is not None else {}
    superficial = _depth_flags(stats, labels, image, spacing, spec)
    for entry in stats:
        label, name = int(entry["label"]), str(entry["name"])
        found = confidence.get(label, {})
        entry["confidence"] = found.get("confidence")
        entry["high_entropy_fraction"] = found.get("high_entropy_fraction")
        entry["tta_agreement"] = agreement.get(label)
        entry["removed_fraction"] = removed.get(label, 0.0) if removed else None
        own = _structure_flags(entry, labels, spec) + [f for f in superficial if f["structure"] == name]
        entry["flags"] = list(dict.fromkeys(f["code"] for f in own))
        entry["qc"] = "; ".join(f["reason"] for f in own)
        flags += own
    present = {str(s["name"]) for s in stats}
    for name in spec.expected_structures:
        if name not in present:
            flags.append(_flag("missing_structure", f"{name}: expected by the bundle, not found", name))
    failing = [f for f in flags if f["severity"] == "fail"]
    record = {
        "flagged": bool(failing),
        "reasons": [_with_structure(f) for f in failing],
        "warnings": [_with_structure(f) for f in flags if f["severity"] != "fail"],
        "flags": flags,
        "tta": tta,
        "tta_passes": len(signals.tta_passes) if signals is not None and signals.tta_passes else 1,
        "thresholds": {
            "entropy_threshold_nats": spec.entropy_threshold_nats,
            "min_confidence": spec.min_confidence,
            "max_high_entropy_fraction": spec.max_high_entropy_fraction,
            "min_tta_agreement": spec.min_tta_agreement,
            "max_removed_fraction": spec.max_removed_fraction,
            "min_edge_area_fraction": spec.min_edge_area_fraction,
            "min_depth_mm": spec.min_depth_mm,
            "structures": spec.structures,
        },
    }
    if failing:
        logger.warning("QC: result flagged (%d reason(s), the first: %s)", len(failing), record["reasons"][0])
    return record


def _depth_flags(
    stats: Sequence[Mapping[str, Any]],
    labels: np.ndarray,
    image: np.ndarray,
    spacing: Sequence[float] | None,
    spec: QualitySpec,
) -> list[dict[str, Any]]:
    """``too_superficial`` flags of the structures with a declared ``min_depth_mm``, present in ``labels``."""
    declared = [(int(e["label"]), str(e["name"])) for e in stats if str(e["name"]) in spec.min_depth_mm]
    if not declared or spacing is None:
        return []
    from pipelines.outputs.depth import body_depth_mm, qc_step

    plane = image[0] if image.ndim == labels.ndim + 1 else image  # the first channel of a multi-contrast input
    step = qc_step(spacing)
    depth = body_depth_mm(plane, spacing, step) if plane.shape == labels.shape else None
    if depth is None:  # said, not skipped in silence: the bundle asked for this check
        reason = "not checked for depth under the body's surface: no body could be told from the background"
        return [_flag("depth_unchecked", reason, name, severity="warn") for _, name in declared]
    flags = []
    for label, name in declared:
        where = np.nonzero(labels == label)
        median = float(np.median(depth[tuple(axis // n for axis, n in zip(where, step, strict=True))]))
        least = spec.min_depth_mm[name]
        if median < least:
            reason = (
                f"its voxels lie a median {median:.1f} mm under the body's surface, less than the {least:g} mm the "
                "bundle declares for it (it lies deeper than that: is it the skin, the scalp or the fat under them?)"
            )
            flags.append(_flag("too_superficial", reason, name))
    return flags


def _with_structure(flag: Mapping[str, Any]) -> str:
    structure = flag.get("structure")
    reason = str(flag["reason"])
    return reason if not structure or reason.startswith(f"{structure}:") else f"{structure}: {reason}"


def _structure_flags(entry: Mapping[str, Any], labels: np.ndarray, spec: QualitySpec) -> list[dict[str, Any]]:
    name, label = str(entry["name"]), int(entry["label"])

    def limit(key: str) -> float:
        return spec.threshold(name, key)

    flags: list[dict[str, Any]] = []
    cut = _edge_flag(labels, label, entry["bbox_voxels"], limit("min_edge_area_fraction"))
    bounds = spec.volume_ml.get(name)
    volume = float(entry["volume_ml"])
    if bounds is not None and not bounds[0] <= volume <= bounds[1]:
        reason = f"{volume:.1f} mL is outside the plausible {bounds[0]:g}-{bounds[1]:g} mL the bundle declares"
        if cut and volume < bounds[0]:  # a cut organ is expected to be small: its outline may still be right
            flags.append(_flag("volume_range", reason + " (it is cut by the field of view)", name, severity="warn"))
        else:
            flags.append(_flag("volume_range", reason, name))
    removed = entry.get("removed_fraction")
    if removed is not None and removed > limit("max_removed_fraction"):
        flags.append(
            _flag(
                "fragmented",
                f"{removed:.0%} of its voxels were scattered islands removed by the clean-up "
                f"(more than {limit('max_removed_fraction'):.0%})",
                name,
            )
        )
    if cut:
        flags.append(_flag("truncated", cut, name, severity="warn"))
    conf = entry.get("confidence")
    if conf is not None and conf < limit("min_confidence"):
        flags.append(
            _flag(
                "low_confidence",
                f"mean class probability {conf:.2f} inside it, below {limit('min_confidence'):g}",
                name,
            )
        )
    uncertain = entry.get("high_entropy_fraction")
    if uncertain is not None and uncertain > limit("max_high_entropy_fraction"):
        flags.append(
            _flag(
                "low_confidence",
                f"{uncertain:.0%} of its voxels have an entropy above {spec.entropy_threshold_nats:g} nats "
                f"(more than {limit('max_high_entropy_fraction'):.0%})",
                name,
            )
        )
    agreement = entry.get("tta_agreement")
    if agreement is not None and agreement < limit("min_tta_agreement"):
        flags.append(
            _flag(
                "low_agreement",
                f"the augmented predictions agree at Dice {agreement:.2f}, below {limit('min_tta_agreement'):g}",
                name,
            )
        )
    return flags


def stats_and_quality(
    labels: np.ndarray,
    image: np.ndarray,
    affine: np.ndarray,
    names: Mapping[int, str],
    signals: PostprocessSignals | None,
    spec: QualitySpec,
    *,
    input_modality: str = "",
    tta: str = "none",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Statistics of the final label map with their confidence columns, and the case's QC record.

    Args:
        labels: final label map ``(i, j, k)``; image: the input ``(i, j, k)``; affine: 4x4 voxel-to-RAS (mm).
        names: label id -> structure name.
        signals, spec, input_modality, tta: see :func:`assess_case`.

    Returns:
        ``(stats, quality)``: the :func:`~pipelines.outputs.stats.compute_stats` list (each entry
        with the columns :func:`assess_case` adds) and the run.json ``quality`` record.
    """
    from pipelines.outputs.stats import compute_stats

    stats = compute_stats(labels, image, affine, names)
    spacing = spacing_from_affine(affine)
    quality = assess_case(
        stats, labels, signals, spec, image=image, input_modality=input_modality, tta=tta, spacing=spacing
    )
    return stats, quality


def banner(quality: Mapping[str, Any] | None, limit: int = 3) -> str | None:
    """One line for the preview: ``QC FLAGGED ...: reason; reason (+N more)`` for a flagged case,
    ``QC note (not flagged): warning; ...`` for a case with warnings only, else None."""
    if not quality:
        return None
    flagged = bool(quality.get("flagged"))
    reasons = [str(r) for r in quality.get("reasons" if flagged else "warnings", [])]
    if not reasons:
        return None
    more = f" (+{len(reasons) - limit} more)" if len(reasons) > limit else ""
    head = "QC FLAGGED - do not trust without review: " if flagged else "QC note (not flagged): "
    return head + "; ".join(reasons[:limit]) + more
