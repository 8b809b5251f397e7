"""NormalizeOverBody(d): zero mean and unit variance over the body, whatever the air around it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity

from pipelines.foreground import body_mask
from pipelines.transforms import NormalizeOverBody, NormalizeOverBodyd
from tests.helpers import oriented_affine


def _head(air_voxels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ball of 'brain' (600) with a bright 'tumour' (900) and a scalp ring (1200) in Rayleigh-noise air,
    ``air_voxels`` of air on every side; returns the image (i, j, k) and the head and tumour masks."""
    rng = np.random.default_rng(seed)
    n = 40 + 2 * air_voxels
    grid = np.indices((n, n, n)).astype(np.float32) - (n - 1) / 2
    radius = np.sqrt((grid**2).sum(axis=0))
    image = rng.rayleigh(20.0, size=(n, n, n)).astype(np.float32)  # magnitude noise of the air: never zero
    head = radius <= 19
    image[head] = 600 + rng.normal(0, 30, size=int(head.sum()))
    image[(radius > 16) & head] = 1200
    tumour = np.sqrt(((grid - np.array([5, 0, 0])[:, None, None, None]) ** 2).sum(axis=0)) <= 4
    image[tumour] = 900
    return image, head, tumour


def test_tissue_levels_do_not_move_with_the_air_in_the_field_of_view() -> None:
    levels = {}
    for air in (4, 24):
        image, _, tumour = _head(air)
        by_body = np.asarray(NormalizeOverBody()(image[None].copy()))[0]  # MONAI normalises in place
        by_nonzero = np.asarray(NormalizeIntensity(nonzero=True, channel_wise=True)(image[None].copy()))[0]
        levels[air] = (float(np.median(by_body[tumour])), float(np.median(by_nonzero[tumour])))
    (body_small, nonzero_small), (body_large, nonzero_large) = levels[4], levels[24]
    assert abs(body_small - body_large) < 0.02, levels
    assert abs(nonzero_small - nonzero_large) > 0.5, levels  # what MONAI's non-zero normalisation does


def test_the_body_has_zero_mean_and_unit_variance_and_the_geometry_is_kept() -> None:
    image, head, _ = _head(10)
    affine = torch.as_tensor(oriented_affine("LPS", image.shape, (1.0, 1.2, 3.0)))
    data = {"image": MetaTensor(torch.as_tensor(image[None]), meta={"affine": affine})}
    out = NormalizeOverBodyd("image")(data)["image"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and tuple(out.shape) == (1, *image.shape)
    np.testing.assert_allclose(out.affine.numpy(), affine.numpy())
    values = out.as_tensor().numpy()[0][head]
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01
    assert body_mask(image).sum() == head.sum()


def test_each_channel_has_its_own_statistics() -> None:
    first, head, _ = _head(8, seed=1)
    second = first * 3.0 + 50.0
    out = np.asarray(NormalizeOverBody()(np.stack([first, second])))
    for channel in out:
        assert abs(channel[head].mean()) < 0.01 and abs(channel[head].std() - 1) < 0.01
    np.testing.assert_allclose(out[0], out[1], atol=1e-3)


def test_a_constant_or_empty_image_has_no_body_and_gives_zeros(caplog: pytest.LogCaptureFixture) -> None:
    """No body can be told apart: the non-zero voxels' statistics are used, and never a division by zero."""
    for value in (3.0, 0.0):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            out = np.asarray(NormalizeOverBody()(np.full((1, 6, 6, 6), value, dtype=np.float32)))
        assert "no body" in caplog.text and np.all(out == 0), value


def test_a_nan_inside_the_body_does_not_spoil_the_statistics() -> None:
    image, _, _ = _head(8, seed=2)
    clean = np.asarray(NormalizeOverBody()(image[None].copy()))[0]
    holed = image.copy()
    holed[20, 20, 20:23] = np.nan  # inside the head
    out = np.asarray(NormalizeOverBody()(holed[None]))[0]
    finite = np.isfinite(out)
    assert finite.sum() == out.size - 3
    np.testing.assert_allclose(out[finite], clean[finite], atol=2e-3)


def test_a_flat_image_is_refused() -> None:
    with pytest.raises(ValueError, match="expects a \\(C, i, j, k\\) image"):
        NormalizeOverBody()(np.zeros((6, 6, 6), dtype=np.float32))
