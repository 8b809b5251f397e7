"""Run shipped bundles on the real scans and score them against the scans' reference labels.

Each bundle runs through :class:`pipelines.segment.Segmenter` exactly as ``medseg segment`` runs it
(the bundle's own preprocessing, inferer and postprocessing; only the ``labels`` output is
written); the written ``labels.nii.gz`` is read back and scored in physical space against the
case's reference (:func:`pipelines.evaluation.physical.score_in_physical_space`).

Which bundle runs on which case: the bundle's input modality (metadata
``network_data_format.inputs.image.modality``) must be the case's, at least one of its structures
must be in the case's reference (names matched by :func:`~pipelines.evaluation.cases.match_structures`),
and it must take one input channel (every real scan is one contrast; no channel is invented). A
pair that does not qualify is recorded as ``not applicable`` with the reason; a bundle that cannot
be opened (no weights yet) as ``skipped`` with the reason; a case that fails as ``failed``.

The real scans are for evaluation only: nothing here feeds training, thresholds or checkpoint choice.

This module sits beside ``batch``, ``demo`` and ``train`` in the layers (it calls ``segment``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from pipelines.bundles.bundle import Bundle, load_bundle
from pipelines.evaluation.cases import (
    RealCase,
    StructureMatch,
    available_cases,
    match_structures,
    reference_labels,
)
from pipelines.evaluation.physical import STATUSES, check_values, score_in_physical_space
from pipelines.geometry import check_label_map
from pipelines.io.channels import channel_spec
from pipelines.io.readers import read_volume
from pipelines.segment import Segmenter, SegmentOptions

__all__ = ["applicability", "evaluate_bundle", "evaluate_real_scans", "result_path"]

logger = logging.getLogger(__name__)


def applicability(bundle: Bundle, case: RealCase, reference: dict[int, str]) -> tuple[list[StructureMatch], str | None]:
    """The bundle's structures matched to the case's reference, and why the bundle does not apply (None when it does).

    Args:
        bundle: the opened bundle.
        case: the real case.
        reference: the case's label value -> structure name (:func:`~pipelines.evaluation.cases.reference_labels`).
    """
    if not bundle.modality:
        return [], f"{bundle.name}: its metadata names no input modality (network_data_format.inputs.image.modality)"
    if bundle.modality != case.modality:
        return [], f"the bundle is for {bundle.modality}, {case.name} is {case.modality}"
    if not any(value != 0 for value in bundle.labels):
        return [], f"{bundle.name}: its metadata names no structures (network_data_format.outputs.pred.channel_def)"
    matches = match_structures(bundle.labels, reference)
    if not any(m.in_reference for m in matches):
        names = ", ".join(m.name for m in matches)
        return matches, f"none of the bundle's structures ({names}) is in {case.name}'s reference"
    spec = channel_spec(bundle.metadata, str(bundle.root / "configs" / "metadata.json"))
    if spec.count > 1:
        wanted = ", ".join(spec.names or ()) or f"{spec.count} channels"
        return matches, (
            f"the bundle needs {spec.count} input channels ({wanted}); {case.name} is one contrast "
            "(channels are not invented)"
        )
    return matches, None


def _case_record(case: RealCase, data_dir: Path, status: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "case": case.name,
        "modality": case.modality,
        "input": str(case.image_path(data_dir)),
        "reference": str(case.label_path(data_dir)),
        "status": status,
        "reason": reason,
    }


def _score_case(
    segmenter: Segmenter,
    case: RealCase,
    data_dir: Path,
    reference: dict[int, str],
    matches: list[StructureMatch],
    output_dir: Path,
) -> dict[str, Any]:
    """Segment one case through the Segmenter and score the written label map in physical space."""
    label_path = case.label_path(data_dir)
    truth = read_volume(label_path)  # cheap checks first: a bad reference fails before inference
    truth_array = check_label_map(truth.array, str(label_path))
    where = str(data_dir / case.name / case.labels_json) if case.labels_json else "a binary mask (0, 1)"
    check_values(truth_array, set(reference), str(label_path), where)
    start = time.perf_counter()
    result = segmenter.run(case.image_path(data_dir), output_dir, case.name)
    seconds = time.perf_counter() - start
    predicted = read_volume(result.files["labels"])
    scores = score_in_physical_space(
        predicted.array,
        predicted.affine,
        truth_array,
        truth.affine,
        matches,
        prediction_name=str(result.files["labels"]),
        reference_name=str(label_path),
    )
    return {
        **_case_record(case, data_dir, "scored"),
        "prediction": str(result.files["labels"]),
        "input_shape": list(predicted.shape),
        "input_spacing_mm": [round(s, 4) for s in predicted.spacing_mm],
        "reference_shape": list(truth.shape),
        "reference_spacing_mm": [round(s, 4) for s in truth.spacing_mm],
        "seconds": round(seconds, 2),
        "stage_seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "device": result.provenance.get("device"),
        "precision": result.provenance.get("precision"),
        **scores,
    }


def evaluate_bundle(
    bundle_dir: Path,
    cases: Sequence[RealCase],
    data_dir: Path,
    output_dir: Path,
    options: SegmentOptions | None = None,
) -> dict[str, Any]:
    """Run one bundle on every real case it applies to and score each.

    Args:
        bundle_dir: the bundle folder.
        cases: the real cases present (:func:`~pipelines.evaluation.cases.available_cases`).
        data_dir: the data folder holding them.
        output_dir: predictions go to ``output_dir/<bundle folder>/<case>/labels.nii.gz``.
        options: device and precision (the outputs are always ``labels`` only).

    Returns:
        ``{"bundle", "name", "version", "path", "modality", "weights": {"path", "sha256"} | None,
        "skipped": reason | None, "cases": [case record, ...]}``; a case record has ``status``
        ``scored`` (with ``structures``, see :func:`~pipelines.evaluation.physical.score_in_physical_space`),
        ``not applicable``, ``skipped`` or ``failed``, and ``reason``.
    """
    record: dict[str, Any] = {"bundle": bundle_dir.name, "path": str(bundle_dir), "weights": None, "skipped": None}
    try:
        bundle = load_bundle(bundle_dir)
    except (FileNotFoundError, ValueError) as err:
        record.update(skipped=str(err), cases=[])
        return record
    record.update(name=bundle.name, version=bundle.version, modality=bundle.modality)
    plans: list[tuple[RealCase, dict[int, str], list[StructureMatch]]] = []
    records: dict[str, dict[str, Any]] = {}
    for case in cases:
        try:
            reference = reference_labels(case, data_dir)
            matches, reason = applicability(bundle, case, reference)
        except (FileNotFoundError, ValueError) as err:
            records[case.name] = _case_record(case, data_dir, "failed", str(err))
            continue
        if reason is not None:
            records[case.name] = _case_record(case, data_dir, "not applicable", reason)
        else:
            plans.append((case, reference, matches))
    if plans:
        options = dataclasses.replace(options or SegmentOptions(), outputs=("labels",))
        try:
            segmenter = Segmenter(bundle, options)  # parses the configs and loads the weights once
        except (FileNotFoundError, ValueError) as err:
            logger.warning("%s: skipped (%s)", bundle_dir.name, err)
            record["skipped"] = str(err)
            for case, _, _ in plans:
                records[case.name] = _case_record(case, data_dir, "skipped", str(err))
        else:
            weights = segmenter.weights.path
            shown = weights.relative_to(bundle.root) if weights.is_relative_to(bundle.root) else weights
            record["weights"] = {"path": str(shown), "sha256": segmenter.weights_sha256}
            for case, reference, matches in plans:
                logger.info("%s on %s", bundle_dir.name, case.name)
                try:
                    records[case.name] = _score_case(
                        segmenter, case, data_dir, reference, matches, output_dir / bundle_dir.name
                    )
                except (FileNotFoundError, ValueError, OSError) as err:
                    logger.warning("%s on %s failed: %s", bundle_dir.name, case.name, err)
                    records[case.name] = _case_record(case, data_dir, "failed", str(err))
    record["cases"] = [records[case.name] for case in cases]
    return record


def evaluate_real_scans(
    bundle_dirs: Sequence[Path],
    data_dir: Path,
    output_dir: Path,
    *,
    case_names: Sequence[str] | None = None,
    options: SegmentOptions | None = None,
) -> dict[str, Any]:
    """Every bundle on every real case it applies to: the whole evaluation, as one JSON-ready record.

    Args:
        bundle_dirs: the bundle folders (e.g. ``bundles/*``).
        data_dir: the real scans' folder (``../shared/data``; see :func:`~pipelines.evaluation.cases.shared_data_dir`).
        output_dir: where the predictions are written (one folder per bundle).
        case_names: the cases to run (default: all present).
        options: device and precision for :class:`~pipelines.segment.Segmenter`.

    Returns:
        ``{"data_dir", "cases", "cases_skipped": {case: reason}, "statuses", "bundles": [...]}``,
        one entry per bundle as :func:`evaluate_bundle` returns it.

    Raises:
        FileNotFoundError: none of the cases is present (the message gives each one's reason).
        ValueError: an unknown case name.
    """
    cases, skipped = available_cases(data_dir, case_names)
    for name, reason in skipped.items():
        logger.warning("real scan %s skipped: %s", name, reason)
    if not cases:
        reasons = sorted(set(skipped.values()))
        raise FileNotFoundError(f"no real scan to evaluate: {'; '.join(reasons)}")
    return {
        "data_dir": str(data_dir),
        "cases": [case.name for case in cases],
        "cases_skipped": skipped,
        "statuses": STATUSES,
        "bundles": [evaluate_bundle(Path(b), cases, data_dir, output_dir, options) for b in bundle_dirs],
    }


def result_path(folder: Path, cpu_kind: str, day: date) -> Path:
    """``folder/real_scans_<cpu_kind>_<day>.json``, or with ``-2``, ``-3``... so no older result is overwritten."""
    stem = f"real_scans_{cpu_kind}_{day.isoformat()}"
    path = folder / f"{stem}.json"
    number = 2
    while path.exists():
        path = folder / f"{stem}-{number}.json"
        number += 1
    return path
