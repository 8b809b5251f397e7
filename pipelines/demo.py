"""The one-command demo: a CT phantom never used in training, segmented with a bundle and scored.

The phantom's seed comes from the demo range of :data:`pipelines.data.datasets.SEEDS`, disjoint
from the training, validation and test seeds, and its geometry from
:func:`pipelines.data.datasets.ct_case_geometry`, so a demo run is the same on every machine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from pipelines.data.datasets import SEEDS, bundle_label_ids, ct_case_geometry
from pipelines.data.phantoms.make import make_ct_phantom
from pipelines.data.phantoms.write import write_nifti
from pipelines.geometry import spacing_from_affine
from pipelines.io.writers import write_json
from pipelines.metrics import segmentation_metrics
from pipelines.segment import Segmenter, SegmentOptions

logger = logging.getLogger(__name__)

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """What the demo produced.

    Attributes:
        output: The demo's output folder.
        dice: Structure name -> Dice of the segmentation against the phantom's truth (NaN when the
            structure is in neither map).
        mean_dice: Mean Dice over the organs (tumours left out, NaN values skipped).
        metrics_path: ``output/metrics.json``.
        case_dir: The folder of the segmentation outputs (``output/phantom_seg``).
    """

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
    output = Path(output)
    segmenter = Segmenter(bundle, SegmentOptions(device=device, precision=precision, outputs=tuple(outputs)))
    geometry = ct_case_geometry(seed)
    phantom = make_ct_phantom(
        seed,
        shape=geometry.shape,
        spacing_mm=geometry.spacing_mm,
        orientation=geometry.orientation,
        label_ids=bundle_label_ids(segmenter.bundle),
    )
    image_path, _label_path = write_nifti(phantom, output / "phantom")
    result = segmenter.run(image_path, output, case_id="phantom_seg")

    predicted = np.asarray(nib.load(result.files["labels"]).dataobj)
    names = {k: v for k, v in segmenter.bundle.labels.items() if k != 0}
    spacing = spacing_from_affine(phantom.affine)
    metrics = segmentation_metrics(predicted, phantom.label, spacing_mm=spacing, labels=names)
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
    metrics_path = write_json(record, output / "metrics.json").path
    logger.info("demo: mean organ Dice %.3f over %d structures, %s", mean_dice, len(organs), metrics_path)
    return DemoResult(output, dice, mean_dice, metrics_path, result.case_dir)
