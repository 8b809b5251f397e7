"""CropForegroundOrKeepd: MONAI's crop, an empty image left whole, labels back on the whole input grid."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import CropForegroundd

from pipelines.transforms import CropForegroundOrKeepd, ResampleScoresToOriginald
from tests.helpers import oriented_affine


def _case() -> dict:
    image = torch.zeros(1, 40, 36, 20)
    image[0, 12:25, 8:30, 5:11] = 0.6  # the "body"
    affine = torch.as_tensor(oriented_affine("RAS", (40, 36, 20), (1.5, 1.5, 2.0)))
    meta = {"affine": affine, "original_affine": affine.clone(), "spatial_shape": np.asarray((40, 36, 20))}
    return {"image": MetaTensor(image, meta=meta)}


def test_same_crop_as_monai() -> None:
    kwargs = {"keys": "image", "source_key": "image", "margin": 3, "allow_smaller": True}
    expected = CropForegroundd(**kwargs)(_case())["image"]
    got = CropForegroundOrKeepd(**kwargs)(_case())["image"]
    assert tuple(got.shape) == tuple(expected.shape) == (1, 19, 28, 12)
    assert torch.equal(got.as_tensor(), expected.as_tensor())
    np.testing.assert_allclose(got.affine.numpy(), expected.affine.numpy())


def test_an_image_without_foreground_stays_whole(caplog: pytest.LogCaptureFixture) -> None:
    empty = {"image": MetaTensor(torch.zeros(1, 12, 10, 8))}
    assert tuple(CropForegroundd("image", source_key="image")(dict(empty))["image"].shape) == (1, 0, 0, 0)
    with caplog.at_level(logging.WARNING):
        kept = CropForegroundOrKeepd("image", source_key="image", margin=8)(dict(empty))["image"]
    assert tuple(kept.shape) == (1, 12, 10, 8) and "no foreground" in caplog.text


def test_scores_on_the_crop_come_back_on_the_whole_grid_in_place() -> None:
    """A structure predicted inside the crop lands on the same voxels of the input grid; outside is background."""
    data = CropForegroundOrKeepd("image", source_key="image", margin=2, allow_smaller=True)(_case())
    cropped = data["image"]
    scores = torch.zeros(2, *cropped.shape[1:])
    scores[0] = 5.0
    scores[1] = torch.where(cropped[0] > 0, 10.0, -10.0)  # "organ" wherever the body is
    out = ResampleScoresToOriginald("pred", ref_key="image")({**data, "pred": MetaTensor(scores, meta=cropped.meta)})
    labels = out["pred"][0].numpy()
    truth = (_case()["image"][0].numpy() > 0).astype(np.uint8)
    assert labels.shape == (40, 36, 20)
    assert np.array_equal(labels, truth)
