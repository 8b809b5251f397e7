"""CT artefact transforms: streaks, rings and metal change the image where they should, follow the
slice axis of the affine, are seeded, and their ``d`` wrappers equal the array transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from pipelines.transforms import RandMetal, RandMetald, RandRings, RandRingsd, RandStreaks, RandStreaksd

SHAPE = (32, 28, 16)


def _body(affine: np.ndarray | None = None, shape=SHAPE) -> MetaTensor:
    """(1, *shape) CT in HU: an ellipsoidal 40 HU body in -1000 HU air."""
    i, j, _k = np.ogrid[tuple(slice(0, s) for s in shape)]
    inside = ((i - shape[0] / 2) / (shape[0] * 0.4)) ** 2 + ((j - shape[1] / 2) / (shape[1] * 0.4)) ** 2 <= 1
    volume = np.where(np.broadcast_to(inside, shape), 40.0, -1000.0).astype(np.float32)
    affine = np.diag([1.5, 1.5, 3.0, 1.0]) if affine is None else affine
    return MetaTensor(torch.from_numpy(volume[None].copy()), affine=torch.as_tensor(affine))


@pytest.mark.parametrize("cls", [RandStreaks, RandRings, RandMetal])
def test_seeded_and_prob_zero_changes_nothing(cls) -> None:
    image = _body()
    a = cls(prob=1.0).set_random_state(3)(image)
    b = cls(prob=1.0).set_random_state(3)(image)
    c = cls(prob=1.0).set_random_state(4)(image)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    assert not np.array_equal(a.numpy(), image.numpy())
    assert torch.equal(cls(prob=0.0)(image), image)
    assert isinstance(a, MetaTensor) and a.dtype == torch.float32 and a.shape == image.shape
    np.testing.assert_array_equal(a.affine.numpy(), image.affine.numpy())


@pytest.mark.parametrize(
    ("cls", "dcls"), [(RandStreaks, RandStreaksd), (RandRings, RandRingsd), (RandMetal, RandMetald)]
)
def test_dictionary_wrapper_equals_array_and_leaves_the_label(cls, dcls) -> None:
    image = _body()
    label = MetaTensor(torch.ones((1, *SHAPE), dtype=torch.uint8))
    array = cls(prob=0.5).set_random_state(11)(image)
    d = dcls("image", prob=0.5).set_random_state(11)({"image": image, "label": label})
    np.testing.assert_array_equal(array.numpy(), d["image"].numpy())
    assert d["label"] is label and torch.all(label == 1)


def test_streaks_cover_a_slab_along_the_slice_axis_constant_within_it() -> None:
    image = _body()
    transform = RandStreaks(prob=1.0).set_random_state(0)
    delta = (transform(image) - image).numpy()[0]
    slab = transform.params["slab"]
    touched = np.abs(delta).reshape(-1, SHAPE[2]).max(axis=0) > 1e-3
    assert touched[slab].all() and not np.delete(touched, np.arange(SHAPE[2])[slab]).any()
    assert np.ptp(delta[:, :, slab], axis=2).max() < 1e-3  # the same streaks on every slice of the slab


def test_slice_axis_follows_the_affine() -> None:
    # PIR-like: array axis 1 runs superior-inferior, so the slices are along axis 1
    affine = np.array([[0, 0, -1.5, 0], [-1.5, 0, 0, 0], [0, -3.0, 0, 0], [0, 0, 0, 1.0]])
    image = _body(affine, shape=(28, 16, 32))
    transform = RandRings(prob=1.0).set_random_state(0)
    delta = (transform(image) - image).numpy()[0]
    assert transform.params["axis"] == 1
    assert np.ptp(delta, axis=1).max() < 1e-3 and np.abs(delta).max() > 1
    with pytest.raises(ValueError, match="slice axis"):
        RandRings(prob=1.0)(image.numpy())


def test_rings_are_circles_around_the_isocentre() -> None:
    image = _body(shape=(33, 33, 4))
    delta = (RandRings(prob=1.0).set_random_state(2)(image) - image).numpy()[0, :, :, 0]
    np.testing.assert_allclose(delta, delta.T, atol=1e-3)  # symmetric about the centre
    np.testing.assert_allclose(delta, delta[::-1, :], atol=1e-3)


def test_metal_adds_very_bright_voxels_inside_the_body_only() -> None:
    image = _body()
    assert int((image > 2000).sum()) == 0
    for seed in range(4):
        transform = RandMetal(prob=1.0).set_random_state(seed)
        out = transform(image).numpy()[0]
        metal = out > 2000
        assert metal.sum() >= 1
        assert np.all(image.numpy()[0][metal] > -300)  # the insert sits in the body
        centre = transform.params["centre"]
        assert out[centre] >= 2500
        assert np.abs(out - image.numpy()[0])[~metal].max() > 20  # with streaks around it


def test_metal_without_body_changes_nothing_and_needs_spacing() -> None:
    air = MetaTensor(torch.full((1, 12, 12, 6), -1000.0), affine=torch.eye(4))
    assert torch.equal(RandMetal(prob=1.0).set_random_state(0)(air), air)
    with pytest.raises(ValueError, match="voxel size"):
        RandMetal(prob=1.0, axis=2)(np.zeros((1, 8, 8, 8), np.float32))


def test_int16_image_stays_int16() -> None:
    image = _body().to(torch.int16)
    out = RandMetal(prob=1.0).set_random_state(1)(image)
    assert out.dtype == torch.int16 and int(out.max()) > 2000


@pytest.mark.parametrize("kwargs", [{"count": (5, 2)}, {"amplitude_hu": (-1, 3)}, {"width_vox": "wide"}])
def test_bad_ranges_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="RandStreaks"):
        RandStreaks(**kwargs)
