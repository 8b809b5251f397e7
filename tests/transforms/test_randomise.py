"""Randomised appearance transforms: per-tissue intensities, partial volume, slice thickness.

Each changes what it should and only that, is reproducible from its seed, and its ``d`` wrapper
equals the array transform; labels are never touched; type, dtype, shape and affine are kept.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RandBiasField
from scipy import ndimage

from pipelines.transforms import (
    RandPartialVolume,
    RandPartialVolumed,
    RandSliceThickness,
    RandSliceThicknessd,
    RandTissueIntensity,
    RandTissueIntensityd,
)

SPACING = (1.5, 1.5, 3.0)
AFFINE = np.diag([*SPACING, 1.0])
TABLE = {0: (0.0, 0.0), 1: (10.0, 20.0), 2: (100.0, 200.0), 3: (-50.0, -40.0)}


def _tissue() -> MetaTensor:
    """(1, 24, 20, 12) tissue map: background 0, a box of 1, a ball of 2 inside it, a slab of 3."""
    t = np.zeros((24, 20, 12), dtype=np.uint8)
    t[3:21, 3:17, 2:10] = 1
    i, j, k = np.ogrid[:24, :20, :12]
    t[((i - 12) ** 2 + (j - 10) ** 2 + 4 * (k - 6) ** 2) <= 25] = 2
    t[:, :, 11] = 3
    return MetaTensor(torch.from_numpy(t[None].copy()), affine=torch.as_tensor(AFFINE))


def _image(seed: int = 0) -> MetaTensor:
    transform = RandTissueIntensity(TABLE, texture_std=2.0)
    transform.set_random_state(seed)
    return transform(_tissue())


# ---------------------------------------------------------------------------------------------
# RandTissueIntensity
# ---------------------------------------------------------------------------------------------


def test_one_mean_per_tissue_inside_the_tables_range() -> None:
    tissue = _tissue()
    transform = RandTissueIntensity(TABLE)
    for seed in range(5):
        image = transform.set_random_state(seed)(tissue)
        assert isinstance(image, MetaTensor) and image.dtype == torch.float32 and image.shape == tissue.shape
        np.testing.assert_array_equal(image.affine.numpy(), AFFINE)
        for tissue_id, (low, high) in TABLE.items():
            values = np.unique(image.numpy()[tissue.numpy() == tissue_id])
            assert values.size == 1 and low <= values[0] <= high, (tissue_id, values)


def test_texture_varies_within_tissue_and_keeps_fixed_tissues_exact() -> None:
    tissue = _tissue().numpy()
    image = _image().numpy()
    assert np.all(image[tissue == 0] == 0.0)  # fixed (0, 0): no texture, background stays zero
    inside = image[tissue == 2]
    assert inside.std() > 0.05 and abs(inside.mean() - np.median(inside)) < 3.0


def test_same_seed_same_image_other_seed_other_image() -> None:
    np.testing.assert_array_equal(_image(3).numpy(), _image(3).numpy())
    assert not np.array_equal(_image(3).numpy(), _image(4).numpy())


def test_named_tables_weights_channels_and_choice_key() -> None:
    tables = {"plain": TABLE, "bright": {i: (lo + 1000, hi + 1000) for i, (lo, hi) in TABLE.items()}}
    transform = RandTissueIntensityd("tissue", tables, choice_key="phase", weights=[0, 1], channels=3)
    out = transform.set_random_state(1)({"tissue": _tissue(), "label": "kept"})
    assert out["phase"] == "bright" and out["label"] == "kept"
    assert out["image"].shape == (3, 24, 20, 12) and float(out["image"].min()) >= 950
    channels = out["image"].numpy()[:, 12, 10, 6]
    assert len(set(channels.tolist())) == 3  # each channel its own contrast


def test_orderings_hold_in_every_draw() -> None:
    table = {0: (0.0, 0.0), 1: (0.0, 1.0), 2: (0.0, 1.0), 3: (0.0, 1.0)}
    transform = RandTissueIntensity(table, orderings=[(3, 1), (1, 2)])
    tissue = _tissue()
    for seed in range(20):
        transform.set_random_state(seed)(tissue)
        m = transform.means[0]
        assert m[3] <= m[1] <= m[2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tables": {}}, "at least one"),
        ({"tables": {1: (5.0, 1.0)}}, "low <= high"),
        ({"tables": {1: (0, 1), 2: (0, 1)}, "orderings": [(1, 2), (2, 1)]}, "cycle"),
        ({"tables": TABLE, "orderings": [(1, 2)]}, "one shared range"),
        ({"tables": {"a": TABLE, "b": TABLE}, "weights": [1.0]}, "weights"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RandTissueIntensity(**kwargs)


def test_a_tissue_without_range_is_refused_with_its_id() -> None:
    with pytest.raises(ValueError, match=r"tissue ids \[3\] have no intensity range"):
        RandTissueIntensity({0: (0, 0), 1: (1, 2), 2: (3, 4)})(_tissue())
    with pytest.raises(ValueError, match="channel-first"):
        RandTissueIntensity(TABLE)(np.zeros((4, 4, 4), np.uint8))


def test_dictionary_wrapper_equals_array_transform() -> None:
    array = RandTissueIntensity(TABLE, texture_std=3.0).set_random_state(7)(_tissue())
    wrapped = RandTissueIntensityd("tissue", TABLE, texture_std=3.0).set_random_state(7)({"tissue": _tissue()})
    np.testing.assert_array_equal(array.numpy(), wrapped["image"].numpy())


# ---------------------------------------------------------------------------------------------
# RandPartialVolume
# ---------------------------------------------------------------------------------------------


def test_partial_volume_blurs_borders_only() -> None:
    tissue = _tissue()
    image = _image()
    out = RandPartialVolume(sigma_mm=(0.5, 0.5)).set_random_state(0)(image, tissue)
    changed = out.numpy() != image.numpy()
    t = tissue.numpy()[0]
    border = np.zeros(t.shape, dtype=bool)
    for axis in range(3):
        step = np.diff(t, axis=axis) != 0
        border[tuple(slice(0, -1) if a == axis else slice(None) for a in range(3))] |= step
        border[tuple(slice(1, None) if a == axis else slice(None) for a in range(3))] |= step
    assert changed[0][border].mean() > 0.9
    far = ~ndimage.binary_dilation(border, structure=np.ones((3, 3, 3)), iterations=2)  # > 2 sigma away
    assert far.any() and not changed[0][far].any()
    np.testing.assert_array_equal(out.affine.numpy(), AFFINE)


def test_partial_volume_needs_a_spacing_and_matching_shapes() -> None:
    with pytest.raises(ValueError, match="voxel size"):
        RandPartialVolume()(np.zeros((1, 8, 8, 8), np.float32), np.zeros((1, 8, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="differ in shape"):
        RandPartialVolume(spacing_mm=(1, 1, 1))(np.zeros((1, 8, 8, 8), np.float32), np.zeros((1, 8, 8, 4), np.uint8))


def test_partial_volume_wrapper_equals_array_and_keeps_the_label() -> None:
    image, tissue = _image(), _tissue()
    label = tissue.clone()
    array = RandPartialVolume().set_random_state(5)(image, tissue)
    d = RandPartialVolumed("image", "tissue").set_random_state(5)({"image": image, "tissue": tissue, "label": label})
    np.testing.assert_array_equal(array.numpy(), d["image"].numpy())
    assert d["label"] is label


# ---------------------------------------------------------------------------------------------
# RandSliceThickness
# ---------------------------------------------------------------------------------------------


def _steps_along(axis: int) -> MetaTensor:
    """(1, 24, 20, 18) image varying only along ``axis``: a step every 5 voxels."""
    shape = [24, 20, 18]
    profile = ((np.arange(shape[axis]) // 5) % 2 * 100.0).astype(np.float32)
    view = [1, 1, 1]
    view[axis] = shape[axis]
    volume = np.broadcast_to(profile.reshape(view), shape).copy()
    return MetaTensor(torch.from_numpy(volume[None]), affine=torch.as_tensor(np.diag([1.0, 1.0, 1.0, 1.0])))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_thickness_blurs_only_along_its_axis(axis: int) -> None:
    transform = RandSliceThickness(thickness_mm=(4.0, 6.0), axis=axis)
    for other in {0, 1, 2} - {axis}:
        image = _steps_along(other)
        out = transform.set_random_state(1)(image)
        np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-3)
    image = _steps_along(axis)
    out = transform.set_random_state(1)(image).numpy()
    assert np.abs(out - image.numpy()).max() > 10  # steps smeared: partial volume
    assert np.any((out > 5) & (out < 95))
    assert out.shape == image.shape and out.dtype == np.float32
    spread = np.ptp(out, axis=tuple(a + 1 for a in {0, 1, 2} - {axis}))
    assert spread.max() < 1e-3  # still constant across the other axes


def test_slice_thickness_thinner_than_voxel_changes_nothing_and_int_dtype_kept() -> None:
    image = MetaTensor(torch.randint(-100, 100, (1, 8, 8, 8), dtype=torch.int16), affine=torch.diag(torch.ones(4) * 3))
    assert torch.equal(RandSliceThickness((1.0, 2.0), axis=2)(image), image)
    out = RandSliceThickness((6.0, 6.0), axis=2).set_random_state(0)(image)
    assert out.dtype == torch.int16 and not torch.equal(out, image)


def test_slice_thickness_seeded_and_wrapper_equals_array() -> None:
    image = _image()
    a = RandSliceThickness(axis=None).set_random_state(2)(image)
    b = RandSliceThickness(axis=None).set_random_state(2)(image)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    outs = {RandSliceThickness(axis=None).set_random_state(s)(image).numpy().tobytes() for s in range(4)}
    assert len(outs) > 1
    label = _tissue()
    d = RandSliceThicknessd("image", axis=None).set_random_state(2)({"image": image, "label": label})
    np.testing.assert_array_equal(a.numpy(), d["image"].numpy())
    assert d["label"] is label


def test_slice_thickness_bad_axis_refused() -> None:
    with pytest.raises(ValueError, match="axis"):
        RandSliceThickness(axis=3)


# ---------------------------------------------------------------------------------------------
# MONAI's bias field, reused for MR
# ---------------------------------------------------------------------------------------------


def test_monai_bias_field_keeps_the_mr_background_zero() -> None:
    image = RandTissueIntensity({0: (0, 0), 1: (0, 1), 2: (0, 1), 3: (0, 1)}).set_random_state(0)(_tissue())
    out = RandBiasField(coeff_range=(-0.3, 0.3), prob=1.0).set_random_state(0)(image)
    background = _tissue().numpy() == 0
    assert np.all(out.numpy()[background] == 0) and not np.allclose(out.numpy(), image.numpy())
