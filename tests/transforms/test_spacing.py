"""SeparableSpacingd gives MONAI's Spacingd result: geometry, voxels, and a record Invertd can undo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, Orientationd, Spacingd

from pipelines.transforms import SeparableSpacingd
from tests.helpers import oriented_affine


def _image(codes: str, shape: tuple[int, ...], spacing: tuple[float, ...], channels: int = 1, oblique: bool = False):
    affine = oriented_affine(codes, shape, spacing)
    if oblique:  # a gantry-tilt-like rotation of 10 degrees about the first axis
        c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
        affine = np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]]) @ affine
    rng = np.random.default_rng(7)
    data = torch.as_tensor(rng.normal(40.0, 300.0, (channels, *shape)).astype(np.float32))
    return {"image": MetaTensor(data, affine=torch.as_tensor(affine))}


def _oriented(d):
    return Orientationd("image", axcodes="RAS")(d)


@pytest.mark.parametrize(
    "codes, shape, spacing, pixdim, channels, oblique",
    [
        ("LPS", (61, 53, 17), (0.8, 0.8, 2.5), (1.5, 1.5, 2.0), 1, False),  # CT: coarser in-plane, finer in z
        ("RAS", (40, 44, 30), (1.5, 1.5, 2.0), (1.5, 1.5, 2.0), 1, False),  # already on the grid
        ("PIR", (33, 29, 41), (1.1, 0.9, 1.3), (1.0, 1.0, 1.0), 4, False),  # MR, four channels
        ("LPS", (35, 31, 12), (0.7, 0.7, 3.0), (1.5, 1.5, 2.0), 1, True),  # oblique: still per axis
    ],
)
def test_same_result_as_monai_spacingd(codes, shape, spacing, pixdim, channels, oblique) -> None:
    data = _oriented(_image(codes, shape, spacing, channels, oblique))
    expected = Spacingd("image", pixdim=pixdim, mode="bilinear")(dict(data))["image"]
    got = SeparableSpacingd("image", pixdim=pixdim, mode="bilinear")(dict(data))["image"]
    assert isinstance(got, MetaTensor) and got.dtype == torch.float32
    assert tuple(got.shape) == tuple(expected.shape)
    np.testing.assert_allclose(got.affine.numpy(), expected.affine.numpy(), atol=1e-9)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-3 * float(expected.abs().max()))
    assert [op["class"] for op in got.applied_operations] == [op["class"] for op in expected.applied_operations]
    assert not got.pending_operations
    assert got.data_ptr() != data["image"].data_ptr()  # a new tensor even when nothing moved


def test_invertd_takes_it_back_to_the_input_grid() -> None:
    pre = Compose(
        [
            EnsureChannelFirstd("image", channel_dim="no_channel"),
            Orientationd("image", axcodes="RAS"),
            SeparableSpacingd("image", pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
        ]
    )
    source = _image("LPS", (41, 37, 13), (0.8, 0.8, 2.5))["image"][0]
    out = pre({"image": source})
    back = Invertd("image", transform=pre, orig_keys="image")({"image": out["image"]})["image"]
    assert tuple(back.shape[1:]) == tuple(source.shape)
    np.testing.assert_allclose(back.affine.numpy(), source.affine.numpy(), atol=1e-6)


def test_what_it_does_not_interpolate_itself_is_monais() -> None:
    data = _oriented(_image("LPS", (30, 26, 9), (0.8, 0.8, 2.5)))
    for kwargs in ({"mode": "nearest"}, {"mode": "bilinear", "padding_mode": "zeros"}, {"mode": 1}):
        expected = Spacingd("image", pixdim=(1.5, 1.5, 2.0), **kwargs)(dict(data))["image"]
        got = SeparableSpacingd("image", pixdim=(1.5, 1.5, 2.0), **kwargs)(dict(data))["image"]
        assert torch.equal(got.as_tensor(), expected.as_tensor()), kwargs
    lazy = SeparableSpacingd("image", pixdim=(1.5, 1.5, 2.0), lazy=True)(dict(data))["image"]
    assert len(lazy.pending_operations) == 1 and tuple(lazy.shape) == tuple(data["image"].shape)
