"""ResampleLabelsToGrid: labels return to the input grid on the right voxels, without Invertd's costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, Orientationd, Spacingd
from scipy import ndimage

from pipelines.transforms import ResampleLabelsToGrid, ResampleLabelsToOriginald
from pipelines.transforms.grid import ResampleScoresToGrid
from tests.helpers import oriented_affine


def _loaded(codes: str, shape=(40, 34, 12), spacing=(0.8, 1.1, 2.5)) -> tuple[MetaTensor, np.ndarray]:
    """A MetaTensor as LoadImage gives it, holding a label-like pattern defined in world space."""
    affine = oriented_affine(codes, shape, spacing)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    labels = (np.abs(world[:, 0] - 3) < 8).astype(np.uint8) + 2 * (np.linalg.norm(world - [0, -5, 12], axis=1) < 6)
    array = np.minimum(labels, 2).reshape(shape).astype(np.float32)
    meta = {
        "affine": torch.as_tensor(affine),
        "original_affine": torch.as_tensor(affine),
        "spatial_shape": np.asarray(shape),
        "original_channel_dim": float("nan"),
    }
    return MetaTensor(torch.as_tensor(array), meta=meta), array.astype(np.uint8)


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "PIR"])
def test_round_trip_through_orientation_and_spacing(codes: str) -> None:
    image, original = _loaded(codes)
    # The same voxel size in RAS axis order, so the round trip must be exact.
    pixdim = np.abs(np.linalg.norm(image.affine.numpy()[:3, :3], axis=0))[
        np.argsort(np.argmax(np.abs(image.affine.numpy()[:3, :3]), axis=0))
    ]
    pre = Compose(
        [
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=tuple(pixdim), mode="nearest"),
        ]
    )
    data = pre({"image": image})
    pred = MetaTensor(data["image"].as_tensor().round().to(torch.uint8), meta=data["image"].meta)
    back = ResampleLabelsToOriginald("pred", ref_key="image")({**data, "pred": pred})["pred"]
    assert back.dtype == torch.uint8 and tuple(back.shape) == (1, *original.shape)
    np.testing.assert_array_equal(back[0].numpy(), original)  # same spacing: exact, whatever the orientation
    np.testing.assert_allclose(back.affine.numpy(), image.affine.numpy())


def test_agrees_with_invertd_after_resampling() -> None:
    image, _ = _loaded("LPS")
    pre = Compose(
        [
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=(1.5, 1.5, 2.0), mode="nearest"),
        ]
    )
    data = pre({"image": image})
    pred = MetaTensor(data["image"].as_tensor().round().to(torch.uint8), meta=data["image"].meta)
    ours = ResampleLabelsToOriginald("pred")({**data, "pred": pred})["pred"][0].numpy()
    theirs = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)({**data, "pred": pred.clone()})[
        "pred"
    ]
    theirs = np.rint(theirs[0].numpy()).astype(np.uint8)
    assert ours.shape == theirs.shape
    # Both are nearest neighbours; they may differ only where a target voxel is equidistant from two sources.
    assert np.mean(ours != theirs) < 0.02


def test_oblique_grids_fall_back_to_scipy() -> None:
    source = np.zeros((1, 20, 20, 20), np.uint8)
    source[0, 5:15, 6:12, 4:16] = 3
    angle = np.deg2rad(20)
    target = np.eye(4)
    target[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    target[:3, 3] = [2.0, -1.0, 0.5]
    out = ResampleLabelsToGrid()(source, target, (20, 20, 20), source_affine=np.eye(4))
    expected = ndimage.affine_transform(source[0], target[:3, :3], target[:3, 3], output_shape=(20, 20, 20), order=0)
    np.testing.assert_array_equal(out[0], expected)


def test_outside_the_source_grid_is_background() -> None:
    source = np.full((1, 10, 10, 10), 2, np.uint8)
    target = np.eye(4)
    target[0, 3] = 5.0  # shifted by half the volume along i
    out = ResampleLabelsToGrid()(source, target, (10, 10, 10), source_affine=np.eye(4))[0]
    assert (out[:5] == 2).all() and (out[5:] == 0).all()


def test_float_scores_are_refused() -> None:
    with pytest.raises(TypeError, match=r"expected an integer label map, got dtype float32; argmax and cast first"):
        ResampleLabelsToGrid()(np.zeros((1, 4, 4, 4), np.float32), np.eye(4), (4, 4, 4), source_affine=np.eye(4))


def test_reference_without_loader_meta_is_refused() -> None:
    with pytest.raises(ValueError, match=r"key 'image' carries no original_affine"):
        ResampleLabelsToOriginald("pred")(
            {"image": torch.zeros(1, 4, 4, 4), "pred": torch.zeros(1, 4, 4, 4, dtype=torch.uint8)}
        )


@pytest.mark.parametrize("path", ["boundary", "dense"])
@pytest.mark.parametrize("codes", ["LPS", "RAS", "PIR"])
def test_scores_path_equals_invertd_on_probabilities(codes: str, path: str) -> None:
    """Softmax, trilinear back to the input grid, argmax: the Model Zoo path (near boundaries only, or in slabs)."""
    from monai.transforms import Activationsd

    from pipelines.transforms import ResampleScoresToOriginald

    image, _ = _loaded(codes, shape=(37, 29, 11), spacing=(0.9, 1.3, 3.0))
    pre = Compose(
        [
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
        ]
    )
    data = pre({"image": image})
    smooth = torch.nn.functional.avg_pool3d(torch.randn(1, 4, *data["image"].shape[1:]), 5, stride=1, padding=2)[0]
    scores = MetaTensor(smooth * 10, meta=data["image"].meta)
    ours = ResampleScoresToOriginald("pred")
    ours.resampler.slab_voxels = 500  # several slabs (or chunks of boundary voxels) even on this small grid
    if path == "dense":
        ours.resampler.dense_fraction = -1.0
    got = ours({**data, "pred": scores})["pred"]
    reference = Activationsd("pred", softmax=True)({**data, "pred": scores.clone()})
    reference = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(reference)["pred"].argmax(0)
    assert got.dtype == torch.uint8 and tuple(got.shape) == (1, *image.shape)
    np.testing.assert_allclose(got.affine.numpy(), image.affine.numpy())
    assert np.mean(got[0].numpy() != reference.numpy()) < 1e-3


def _smooth_scores(classes: int, shape: tuple[int, ...], seed: int, blur: int) -> torch.Tensor:
    torch.manual_seed(seed)
    noise = torch.randn(1, classes, *shape)
    return torch.nn.functional.avg_pool3d(noise, blur, stride=1, padding=blur // 2)[0] * 10 if blur > 1 else noise[0]


@pytest.mark.parametrize("softmax", [True, False])
def test_boundary_path_equals_dense_interpolation_voxel_for_voxel(softmax: bool) -> None:
    """Interpolating only where the 8 surrounding source voxels disagree gives the dense result exactly."""
    scores = _smooth_scores(5, (40, 34, 22), seed=3, blur=7)
    if not softmax:
        scores = torch.softmax(scores, dim=0)
    source = np.diag([1.5, 1.5, 2.0, 1.0])
    target = np.diag([-0.7, 0.9, 1.0, 1.0])  # finer, flipped along x, shifted: low/high taps both used
    target[:3, 3] = (40 * 1.5 - 1.0, 0.4, -0.6)
    shape = (88, 58, 46)
    fast = ResampleScoresToGrid(softmax=softmax, slab_voxels=997)(scores, target, shape, source)
    dense = ResampleScoresToGrid(softmax=softmax, dense_fraction=-1.0)(scores, target, shape, source)
    assert np.array_equal(fast.numpy(), dense.numpy())
    assert len(np.unique(fast.numpy())) == 5  # every class present: boundaries everywhere were exercised


def test_noisy_scores_take_the_dense_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where most voxels lie near a boundary (noise), the per-voxel path would cost more than the slabs."""
    scores = _smooth_scores(4, (12, 10, 8), seed=4, blur=1)
    resampler = ResampleScoresToGrid()
    calls = []
    dense = resampler._dense
    monkeypatch.setattr(resampler, "_dense", lambda *a: calls.append(1) or dense(*a))
    target = np.diag([0.5, 0.5, 0.5, 1.0])
    out = resampler(scores, target, (24, 20, 16), np.eye(4))
    assert calls == [1] and tuple(out.shape) == (1, 24, 20, 16)
