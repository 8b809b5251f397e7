"""Per-voxel confidence maps, per-structure confidence and the clean-up trace, read during postprocessing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, CastToTyped, Compose
from monai.utils import MetaKeys

from pipelines.cli.main import main
from pipelines.outputs.confidence import (
    ConfidenceMaps,
    quantize,
    removed_fractions,
    structure_confidence,
    traced_postprocessing,
)
from pipelines.transforms import (
    RemoveSmallIslandsd,
    ResampleLabelsToOriginald,
    ResampleScoresToOriginald,
)
from tests.helpers import cube_scan, write_nifti

SHAPE = (12, 10, 8)


def _case(logits: torch.Tensor) -> dict:
    """A case dictionary whose image grid is the original grid (identity mapping, 2 mm voxels)."""
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))
    meta = {MetaKeys.AFFINE: affine, MetaKeys.ORIGINAL_AFFINE: affine, MetaKeys.SPATIAL_SHAPE: np.array(SHAPE)}
    image = MetaTensor(torch.zeros(1, *SHAPE), meta=meta)
    return {"image": image, "pred": MetaTensor(logits, meta=dict(meta))}


def _one_hot_logits() -> tuple[torch.Tensor, np.ndarray]:
    truth = np.zeros(SHAPE, np.int64)
    truth[2:8, 2:7, 2:6] = 1
    truth[9:11, 1:4, 1:4] = 2
    logits = torch.nn.functional.one_hot(torch.as_tensor(truth), 3).permute(3, 0, 1, 2).float() * 50.0
    return logits, truth


SCORE_PATH = Compose(
    [
        ResampleScoresToOriginald(keys="pred", ref_key="image", softmax=True),
        RemoveSmallIslandsd(keys="pred", min_size_mm3=0),
    ]
)
LABEL_PATH = Compose(
    [
        AsDiscreted(keys="pred", argmax=True),
        CastToTyped(keys="pred", dtype=torch.uint8),
        RemoveSmallIslandsd(keys="pred", min_size_mm3=0),
        ResampleLabelsToOriginald(keys="pred", ref_key="image"),
    ]
)


@pytest.mark.parametrize("compose", [SCORE_PATH, LABEL_PATH], ids=["scores-to-grid", "labels-to-grid"])
def test_one_hot_logits_give_confidence_one(compose: Compose) -> None:
    logits, truth = _one_hot_logits()
    out, signals = traced_postprocessing(compose, _case(logits))
    labels = np.asarray(out["pred"])[0]
    assert np.array_equal(labels, truth)
    assert signals.confidence is not None and signals.confidence.max_probability.shape == SHAPE
    found = structure_confidence(labels, signals.confidence)
    assert found == {1: {"confidence": 1.0, "high_entropy_fraction": 0.0}, 2: pytest.approx(found[1])}


def test_traced_postprocessing_gives_the_same_labels_as_the_compose() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, *SHAPE)
    plain = np.asarray(SCORE_PATH(_case(logits.clone()))["pred"])
    traced, signals = traced_postprocessing(SCORE_PATH, _case(logits.clone()))
    assert np.array_equal(np.asarray(traced["pred"]), plain)
    # uniform-ish logits: confidence well below 1 and entropy high somewhere
    assert signals.confidence is not None and signals.confidence.max_probability.max() < 255
    assert signals.before_cleanup is not None and signals.after_cleanup is not None


def test_quantized_maps_follow_the_probabilities() -> None:
    p = torch.tensor([[1.0, 0.5, 1 / 3], [0.0, 0.5, 1 / 3], [0.0, 0.0, 1 / 3]])
    best, entropy = quantize(p)
    assert best.tolist() == [255, 128, 85]
    assert entropy[0] == 0 and entropy[2] == 255
    assert entropy[1] == round(math.log(2) / math.log(3) * 255)


def test_entropy_threshold_is_in_nats() -> None:
    maps = ConfidenceMaps(np.full((2, 2, 2), 204, np.uint8), np.zeros((2, 2, 2), np.uint8), classes=3)
    maps.entropy[0] = round(0.6 / math.log(3) * 255)  # 0.6 nats: above 0.5
    maps.entropy[1] = round(0.4 / math.log(3) * 255)  # 0.4 nats: below
    found = structure_confidence(np.ones((2, 2, 2), np.uint8), maps)
    assert found[1]["confidence"] == pytest.approx(0.8)
    assert found[1]["high_entropy_fraction"] == 0.5


def test_removed_fractions() -> None:
    before = np.zeros((6, 6, 6), np.uint8)
    before[0:3, 0:3, 0:3] = 1  # 27 voxels kept
    before[5, 5, 5] = 1  # an island of 1
    before[4, 0, 0] = 2
    after = before.copy()
    after[5, 5, 5] = 0
    assert removed_fractions(before, after) == {1: pytest.approx(1 / 28), 2: 0.0}
    with pytest.raises(ValueError, match="differ in shape"):
        removed_fractions(before, after[:5])


def test_one_hot_network_through_segment_reports_confidence_one(tmp_path: Path, zoo_bundle: Path) -> None:
    # The threshold bundle's convolution set to answer "foreground" everywhere with one-hot logits.
    state = torch.load(zoo_bundle / "models" / "model.pt")
    state = {"weight": torch.zeros_like(state["weight"]), "bias": torch.tensor([-100.0, 100.0])}
    torch.save(state, zoo_bundle / "models" / "model.pt")
    image, affine, _truth = cube_scan("RAS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    args = ["segment", str(path), "--bundle", str(zoo_bundle), "-o", str(tmp_path / "out"), "--outputs", "stats"]
    assert main(args) == 0
    stats = json.loads((tmp_path / "out" / "scan" / "stats.json").read_text())
    assert stats[0]["confidence"] == 1.0 and stats[0]["high_entropy_fraction"] == 0.0
    assert stats[0]["flags"] == ["truncated"]  # the whole field of view is "foreground"
    csv_text = (tmp_path / "out" / "scan" / "stats.csv").read_text()
    assert csv_text.splitlines()[0].endswith("confidence,high_entropy_fraction,tta_agreement,removed_fraction,flags,qc")
