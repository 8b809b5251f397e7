"""Tests of pipelines.transforms: small islands, largest component and hole filling on label maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from scipy import ndimage

from pipelines import keys
from pipelines.transforms import (
    FillHoles,
    FillHolesd,
    KeepLargestComponent,
    KeepLargestComponentd,
    RemoveSmallIslands,
    RemoveSmallIslandsd,
    spacing_from_affine,
)

SPACING_MM = (0.8, 0.8, 2.5)
VOXEL_MM3 = 0.8 * 0.8 * 2.5  # 1.6 mm³
BLOB = (slice(4, 7), slice(4, 7), slice(2, 9))  # 3 x 3 x 7 = 63 voxels = 100.8 mm³
BLOB_MM3 = 63 * VOXEL_MM3


def affine_for(spacing: tuple[float, float, float]) -> torch.Tensor:
    """A RAS affine with the given voxel size and an offset, float64."""
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-10.0, 20.0, 5.0], dtype=torch.float64)
    return affine


def as_meta(volume: np.ndarray, spacing: tuple[float, float, float] = SPACING_MM) -> MetaTensor:
    """A channel-first (1, H, W, D) MetaTensor of ``volume`` with an affine of ``spacing``."""
    return MetaTensor(torch.from_numpy(volume[None].copy()), affine=affine_for(spacing))


def blob_map(dtype: type = np.uint8, label: int = 1) -> np.ndarray:
    """A (16, 16, 12) map holding one 63-voxel blob of ``label``."""
    volume = np.zeros((16, 16, 12), dtype=dtype)
    volume[BLOB] = label
    return volume


def volume_of(out: np.ndarray | torch.Tensor) -> np.ndarray:
    """The (H, W, D) numpy voxels of a transform output."""
    arr = out.as_tensor().numpy() if isinstance(out, MetaTensor) else np.asarray(out)
    return arr[0] if arr.ndim == 4 else arr


# ---------------------------------------------------------------- RemoveSmallIslands


def test_blob_volume_is_about_100_mm3() -> None:
    assert int((blob_map() == 1).sum()) == 63
    assert pytest.approx(100.8) == BLOB_MM3


@pytest.mark.parametrize(
    ("min_size_mm3", "kept"),
    [(50.0, True), (BLOB_MM3, True), (BLOB_MM3 + 0.01, False), (200.0, False), (0.0, True)],
)
def test_blob_kept_or_removed_by_mm3(min_size_mm3: float, kept: bool) -> None:
    out = RemoveSmallIslands(min_size_mm3=min_size_mm3)(as_meta(blob_map()))
    assert int((volume_of(out) == 1).sum()) == (63 if kept else 0)


def test_spacing_from_metatensor_affine_is_used() -> None:
    # At 1 mm isotropic the blob is 63 mm³ and goes at 80 mm³; at 0.8x0.8x2.5 mm it is 100.8 mm³ and stays.
    assert volume_of(RemoveSmallIslands(min_size_mm3=80)(as_meta(blob_map(), (1.0, 1.0, 1.0)))).max() == 0
    assert volume_of(RemoveSmallIslands(min_size_mm3=80)(as_meta(blob_map()))).max() == 1


def test_explicit_spacing_wins_over_affine() -> None:
    img = as_meta(blob_map(), (1.0, 1.0, 1.0))  # affine says 63 mm³
    assert volume_of(RemoveSmallIslands(min_size_mm3=80, spacing_mm=SPACING_MM)(img)).max() == 1
    assert volume_of(RemoveSmallIslands(min_size_mm3=80)(img, spacing_mm=SPACING_MM)).max() == 1
    # the call's spacing wins over the constructor's
    assert volume_of(RemoveSmallIslands(min_size_mm3=80, spacing_mm=SPACING_MM)(img, spacing_mm=(1, 1, 1))).max() == 0


def test_spacing_from_oblique_affine() -> None:
    rotation = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :3] = rotation @ torch.diag(torch.tensor(SPACING_MM, dtype=torch.float64))
    assert spacing_from_affine(affine) == pytest.approx(SPACING_MM)


@pytest.mark.parametrize(
    "per_label",
    [{14: 200.0}, {"14": 200.0}, {"lesion": 200.0}, {"Lesion": 200.0}],
    ids=["int", "str", "name", "name-case"],
)
@pytest.mark.parametrize(
    "labels", [{1: "liver", 14: "lesion"}, {"1": "liver", "14": "lesion"}, {"liver": 1, "lesion": 14}]
)
def test_per_label_threshold(per_label: dict, labels: dict) -> None:
    volume = np.zeros((20, 16, 12), dtype=np.uint8)
    volume[BLOB] = 1
    volume[(slice(12, 15), *BLOB[1:])] = 14  # same size, label 14
    out = volume_of(
        RemoveSmallIslands(min_size_mm3=50, min_size_mm3_per_label=per_label, labels=labels)(volume, SPACING_MM)
    )
    assert int((out == 1).sum()) == 63
    assert int((out == 14).sum()) == 0


def test_per_label_lower_threshold_keeps_small_lesion() -> None:
    volume = np.zeros((20, 16, 12), dtype=np.uint8)
    volume[BLOB] = 1
    volume[(slice(12, 15), *BLOB[1:])] = 14
    out = volume_of(RemoveSmallIslands(min_size_mm3=200, min_size_mm3_per_label={"14": 10})(volume, SPACING_MM))
    assert int((out == 1).sum()) == 0
    assert int((out == 14).sum()) == 63


def two_blocks(touch: str) -> np.ndarray:
    """A 4x4x4 block of label 1 and a 2x2x2 block touching it at a corner or along an edge only."""
    volume = np.zeros((12, 12, 12), dtype=np.uint8)
    volume[2:6, 2:6, 2:6] = 1
    if touch == "corner":
        volume[6:8, 6:8, 6:8] = 1
    else:  # "edge": shares an edge along k, no face
        volume[6:8, 6:8, 2:4] = 1
    return volume


@pytest.mark.parametrize(
    ("touch", "connectivity", "small_block_kept"),
    [
        ("corner", 6, False),
        ("corner", 18, False),
        ("corner", 26, True),
        ("edge", 6, False),
        ("edge", 18, True),
        ("edge", 26, True),
    ],
)
def test_connectivity_decides_what_is_one_island(touch: str, connectivity: int, small_block_kept: bool) -> None:
    volume = two_blocks(touch)
    # 8 voxels (8 mm³) alone are removed; joined to the 64-voxel block (72 mm³) they stay
    out = volume_of(RemoveSmallIslands(min_size_mm3=20, connectivity=connectivity)(volume, (1, 1, 1)))
    assert int((out == 1).sum()) == (72 if small_block_kept else 64)
    assert out[2:6, 2:6, 2:6].min() == 1


def test_fill_value_and_other_labels_untouched() -> None:
    volume = blob_map()
    volume[10:14, 10:14, 0:10] = 2  # 160 voxels = 256 mm³
    out = volume_of(RemoveSmallIslands(min_size_mm3=150, fill_value=3)(volume, SPACING_MM))
    assert (out[BLOB] == 3).all()
    assert int((out == 2).sum()) == 160


def test_removes_only_small_islands_of_a_label() -> None:
    volume = np.zeros((24, 24, 12), dtype=np.uint8)
    volume[2:14, 2:14, 2:10] = 5  # big
    volume[18, 18, 5] = 5  # one voxel
    volume[20:22, 2:4, 2:4] = 5  # eight voxels
    out = volume_of(RemoveSmallIslands(min_size_mm3=9)(volume, (1, 1, 1)))
    assert out[18, 18, 5] == 0
    assert (out[20:22, 2:4, 2:4] == 0).all()
    assert (out[2:14, 2:14, 2:10] == 5).all()


def random_label_map(seed: int, shape: tuple[int, int, int] = (40, 36, 24), n_labels: int = 4) -> np.ndarray:
    """Blobby random labels: smoothed noise thresholded per label, seeded."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, dtype=np.uint8)
    for label in range(1, n_labels + 1):
        field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=1.5)
        volume[field > np.quantile(field, 0.9)] = label
    return volume


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("connectivity", [6, 26])
def test_islands_match_whole_volume_labelling(seed: int, connectivity: int) -> None:
    volume = random_label_map(seed)
    structure = ndimage.generate_binary_structure(3, {6: 1, 26: 3}[connectivity])
    expected = volume.copy()
    for label in range(1, 5):
        components, _ = ndimage.label(volume == label, structure=structure)
        sizes = np.bincount(components.ravel())
        small = sizes * VOXEL_MM3 < 20
        small[0] = False
        expected[small[components]] = 0
    out = RemoveSmallIslands(min_size_mm3=20, connectivity=connectivity)(volume, SPACING_MM)
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------- KeepLargestComponent


def three_labels_in_pieces() -> np.ndarray:
    volume = np.zeros((30, 20, 10), dtype=np.uint8)
    for label, i0 in ((1, 0), (2, 10), (3, 20)):
        volume[i0 : i0 + 5, 0:10, 0:5] = label  # big part, 250 voxels
        volume[i0 : i0 + 2, 15:17, 7:9] = label  # small part, 8 voxels
    return volume


@pytest.mark.parametrize("applied", [[1, 2], ["1", "2"], ["liver", "spleen"], [2, 1, 1]])
def test_keep_largest_only_for_listed_labels(applied: list) -> None:
    volume = three_labels_in_pieces()
    transform = KeepLargestComponent(applied, labels={"1": "liver", "2": "spleen", "3": "lesion"})
    out = volume_of(transform(volume))
    assert int((out == 1).sum()) == 250
    assert int((out == 2).sum()) == 250
    assert int((out == 3).sum()) == 258  # lesions keep every part
    assert (out[0:2, 15:17, 7:9] == 0).all()


def test_keep_largest_connectivity_and_fill_value() -> None:
    volume = two_blocks("corner")
    assert int((volume_of(KeepLargestComponent(1, connectivity=26)(volume)) == 1).sum()) == 72
    out = volume_of(KeepLargestComponent(1, connectivity=6, fill_value=7)(volume))
    assert int((out == 1).sum()) == 64
    assert (out[6:8, 6:8, 6:8] == 7).all()


def test_keep_largest_absent_label_is_fine() -> None:
    volume = three_labels_in_pieces()
    np.testing.assert_array_equal(KeepLargestComponent([9])(volume), volume)


def broken_tube_and_island() -> np.ndarray:
    """A tube along k in two pieces (a 4-voxel gap in the middle) and a far island, all label 5."""
    volume = np.zeros((40, 40, 60), dtype=np.uint8)
    volume[5:8, 5:8, 2:30] = 5  # the largest piece
    volume[5:8, 5:8, 34:50] = 5  # the rest of the tube, 4 slices further on
    volume[30:36, 30:36, 20:26] = 5  # an island elsewhere (216 voxels)
    return volume


@pytest.mark.parametrize(
    ("spacing_mm", "max_gap_mm", "kept_pieces"),
    [
        ((1.0, 1.0, 1.0), None, 1),  # the largest component alone
        ((1.0, 1.0, 1.0), 10.0, 2),  # the tube whole (gap 5 mm), the island (about 31 mm off) gone
        ((1.0, 1.0, 3.0), 10.0, 1),  # the same gap is 15 mm on 3 mm slices
        ((1.0, 1.0, 1.0), 40.0, 3),
    ],
)
def test_keep_largest_with_a_gap_keeps_a_broken_tube_whole_and_drops_far_islands(
    spacing_mm: tuple, max_gap_mm: float | None, kept_pieces: int
) -> None:
    volume = broken_tube_and_island()
    pieces = [(slice(5, 8), slice(5, 8), slice(2, 30)), (slice(5, 8), slice(5, 8), slice(34, 50))]
    pieces.append((slice(30, 36), slice(30, 36), slice(20, 26)))
    out = volume_of(KeepLargestComponent([5], max_gap_mm=max_gap_mm, spacing_mm=spacing_mm)(volume))
    kept = [bool((out[piece] == 5).all()) for piece in pieces]
    assert kept == [True] * kept_pieces + [False] * (3 - kept_pieces)
    assert all((out[piece] == 5).all() or (out[piece] == 0).all() for piece in pieces)


def test_keep_largest_gap_reads_the_spacing_from_a_metatensor_and_refuses_without_one() -> None:
    volume = broken_tube_and_island()
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    out = KeepLargestComponentd("pred", applied_labels=[5], max_gap_mm=10.0)(
        {"pred": MetaTensor(torch.as_tensor(volume), affine=torch.as_tensor(affine))}
    )["pred"]
    assert int((volume_of(out) == 5).sum()) == 9 * 28  # 15 mm apart on 3 mm slices: the largest piece alone
    with pytest.raises(ValueError, match="voxel size"):
        KeepLargestComponent([5], max_gap_mm=10.0)(volume)
    with pytest.raises(ValueError, match="max_gap_mm: expected a distance in mm"):
        KeepLargestComponent([5], max_gap_mm=-1)


# ---------------------------------------------------------------- FillHoles


def hollow_cube(
    label: int = 1,
    lo: int = 2,
    hi: int = 12,
    shape: tuple[int, int, int] = (16, 16, 16),
    dtype: type = np.uint8,
) -> np.ndarray:
    """A cube of ``label`` from lo to hi (exclusive) with a one-voxel wall and an empty inside."""
    volume = np.zeros(shape, dtype=dtype)
    volume[lo:hi, lo:hi, lo:hi] = label
    volume[lo + 1 : hi - 1, lo + 1 : hi - 1, lo + 1 : hi - 1] = 0
    return volume


def test_fill_holes_fills_cavity_and_keeps_other_labels() -> None:
    volume = hollow_cube()
    volume[6:8, 6:8, 6:8] = 4  # a lesion inside the cavity
    volume[13:15, 13:15, 13:15] = 2  # another label outside
    out = volume_of(FillHoles()(volume))
    assert (out[3:11, 3:11, 3:11] != 0).all()
    assert (out[6:8, 6:8, 6:8] == 4).all()
    assert int((out == 1).sum()) == 10**3 - 8
    assert (out[13:15, 13:15, 13:15] == 2).all()
    assert int((out == 0).sum()) == int((volume == 0).sum()) - (8**3 - 8)


def test_fill_holes_open_cavity_is_left() -> None:
    volume = hollow_cube()
    volume[6, 6, 2] = 0  # a face-sized opening in the wall
    np.testing.assert_array_equal(FillHoles()(volume), volume)


@pytest.mark.parametrize(("connectivity", "filled"), [(6, True), (18, False), (26, False)])
def test_fill_holes_connectivity_of_the_hole(connectivity: int, filled: bool) -> None:
    volume = np.zeros((12, 12, 12), dtype=np.uint8)
    volume[2:9, 2:9, 2:9] = 1
    volume[3:8, 3:8, 3:8] = 0  # cavity
    # open the corner region (8, 8, k) of the wall: the cavity then reaches the outside through
    # an edge between voxels (8, 7, k) and (7, 8, k) only
    volume[8, 8, 3:8] = 0
    out = volume_of(FillHoles(connectivity=connectivity)(volume))
    assert (out[3:8, 3:8, 3:8] == 1).all() == filled
    assert out[8, 8, 5] == 0  # the opening itself touches the outside face-wise


def test_fill_holes_nested_labels_innermost_wins() -> None:
    volume = hollow_cube(label=2, lo=1, hi=19, shape=(20, 20, 20))  # B encloses ...
    volume[5:15, 5:15, 5:15] = 1  # ... A, which encloses a cavity
    volume[6:14, 6:14, 6:14] = 0
    out = volume_of(FillHoles()(volume))
    assert (out[6:14, 6:14, 6:14] == 1).all()
    assert (out[2:18, 2:18, 2:5] == 2).all()  # the gap between A and B belongs to B now


def test_fill_holes_only_listed_labels() -> None:
    volume = hollow_cube(label=1, lo=0, hi=6, shape=(16, 16, 16))
    volume[8:14, 8:14, 8:14] = hollow_cube(label=3, lo=0, hi=6, shape=(6, 6, 6))
    out = volume_of(FillHoles(applied_labels=[3])(volume))
    assert (out[1:5, 1:5, 1:5] == 0).all()
    assert (out[9:13, 9:13, 9:13] == 3).all()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("connectivity", [6, 26])
def test_fill_holes_matches_scipy_on_a_single_label(seed: int, connectivity: int) -> None:
    rng = np.random.default_rng(seed)
    volume = (rng.random((30, 28, 20)) < 0.8).astype(np.uint8)  # label 1 with many small holes
    structure = ndimage.generate_binary_structure(3, {6: 1, 26: 3}[connectivity])
    expected = ndimage.binary_fill_holes(volume == 1, structure=structure).astype(np.uint8)
    out = FillHoles(connectivity=connectivity)(volume)
    assert int(expected.sum()) > int(volume.sum())
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------- types, meta, dtypes


TRANSFORMS = [
    pytest.param(lambda: RemoveSmallIslands(min_size_mm3=50), id="islands"),
    pytest.param(lambda: KeepLargestComponent([1]), id="largest"),
    pytest.param(lambda: FillHoles(), id="holes"),
]


@pytest.mark.parametrize("make", TRANSFORMS)
def test_metatensor_meta_and_affine_preserved(make) -> None:
    img = as_meta(hollow_cube())
    img.meta["filename_or_obj"] = "case_001.nii.gz"
    img.applied_operations.append({"class": "Spacingd", "id": 1})
    before = img.clone()
    out = make()(img)
    assert isinstance(out, MetaTensor)
    assert out.dtype == torch.uint8
    assert out.shape == img.shape
    assert torch.equal(out.affine, affine_for(SPACING_MM))
    assert out.meta["filename_or_obj"] == "case_001.nii.gz"
    assert out.applied_operations == [{"class": "Spacingd", "id": 1}]
    assert torch.equal(img.as_tensor(), before.as_tensor())  # input not modified


@pytest.mark.parametrize("make", TRANSFORMS)
@pytest.mark.parametrize("kind", ["numpy-3d", "numpy-4d", "torch-4d", "torch-3d"])
def test_same_type_dtype_and_shape(make, kind: str) -> None:
    volume = hollow_cube().astype(np.uint16)
    volume[14, 14, 14] = 1
    img: np.ndarray | torch.Tensor = volume if kind.endswith("3d") else volume[None]
    if kind.startswith("torch"):
        img = torch.from_numpy(np.ascontiguousarray(img))
    transform = make()
    kwargs = {"spacing_mm": SPACING_MM} if isinstance(transform, RemoveSmallIslands) else {}
    out = transform(img, **kwargs)
    assert type(out) is type(img)
    assert out.dtype == img.dtype
    assert tuple(out.shape) == tuple(img.shape)


@pytest.mark.parametrize("make", TRANSFORMS)
def test_uint16_labels_above_255(make) -> None:
    volume = hollow_cube(label=300, dtype=np.uint16)
    volume[14, 14, 14] = 300
    transform = make()
    if isinstance(transform, KeepLargestComponent):
        transform = KeepLargestComponent([300])
    out = volume_of(transform(as_meta(volume)))
    assert out.dtype == np.uint16
    assert out[14, 14, 14] == (300 if isinstance(transform, FillHoles) else 0)
    assert out[2, 2, 2] == 300
    assert out[6, 6, 6] == (300 if isinstance(transform, FillHoles) else 0)


@pytest.mark.parametrize("make", TRANSFORMS)
@pytest.mark.parametrize(
    "img",
    [
        np.zeros((4, 4, 4), dtype=np.float32),
        torch.zeros((1, 4, 4, 4), dtype=torch.float16),
        MetaTensor(torch.zeros((1, 4, 4, 4), dtype=torch.float64)),
    ],
    ids=["numpy-float32", "torch-float16", "meta-float64"],
)
def test_float_input_refused(make, img) -> None:
    transform = make()
    kwargs = {"spacing_mm": (1, 1, 1)} if isinstance(transform, RemoveSmallIslands) else {}
    with pytest.raises(TypeError, match=r"got dtype .*float.*argmax.*cast"):
        transform(img, **kwargs)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RemoveSmallIslands(connectivity=8), r"connectivity must be one of 6, 18, 26.*got 8"),
        (lambda: KeepLargestComponent([1], connectivity=4), r"connectivity must be one of 6, 18, 26.*got 4"),
        (lambda: FillHoles(connectivity=0), r"connectivity must be one of 6, 18, 26.*got 0"),
        (lambda: RemoveSmallIslands(min_size_mm3=-1), r"min_size_mm3: expected .* 0 or more, got -1"),
        (lambda: RemoveSmallIslands(min_size_mm3="big"), r"min_size_mm3: expected .*got 'big'"),
        (lambda: RemoveSmallIslands(min_size_mm3_per_label={"3": -5}), r"min_size_mm3_per_label\['3'\].*got -5"),
        (lambda: RemoveSmallIslands(min_size_mm3_per_label={"kidney": 5}), r"unknown label name 'kidney'"),
        (
            lambda: KeepLargestComponent(["kidney"], labels={"1": "liver"}),
            r"unknown label name 'kidney'; expected an integer id or one of: liver",
        ),
        (lambda: KeepLargestComponent([0]), r"label ids must be 1 or more \(0 is background\), got 0"),
        (lambda: FillHoles(applied_labels=[1], labels={"a": "b"}), r"labels must map ids to names"),
        (lambda: RemoveSmallIslands(fill_value=1.5), r"fill_value must be an integer label id, got 1.5"),
        (lambda: RemoveSmallIslands(spacing_mm=(1, 1))(blob_map()), r"spacing_mm must be three positive.*\(1, 1\)"),
        (lambda: RemoveSmallIslands()(blob_map(), spacing_mm=(1, 0, 1)), r"spacing_mm must be three positive"),
        (lambda: RemoveSmallIslands()(blob_map()), r"cannot tell the voxel size of a plain ndarray.*spacing_mm"),
        (lambda: RemoveSmallIslands()(torch.from_numpy(blob_map())), r"plain Tensor.*spacing_mm"),
        (
            lambda: KeepLargestComponent([1], fill_value=-1)(blob_map()),
            r"fill_value -1 does not fit the label map's dtype uint8 \(0\.\.255\)",
        ),
        (lambda: FillHoles()(np.zeros((2, 4, 4, 4), np.uint8)), r"shape \(1, H, W, D\) or \(H, W, D\).*\(2, 4, 4, 4\)"),
        (lambda: FillHoles()(np.zeros((4, 4), np.uint8)), r"got shape \(4, 4\)"),
        (lambda: FillHoles()([[1, 2]]), r"expected a numpy array or torch tensor label map, got list"),
        (lambda: FillHoles()(np.zeros((4, 4, 4), bool)), r"expected an integer label map .*got dtype bool"),
    ],
)
def test_bad_input_messages(make, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        make()


# ---------------------------------------------------------------- dictionary versions from bundle JSON


POSTPROCESSING_JSON = """
{
  "postprocessing": {
    "_target_": "Compose",
    "transforms": [
      {"_target_": "pipelines.transforms.RemoveSmallIslandsd", "keys": "pred",
       "min_size_mm3": 50, "min_size_mm3_per_label": {"14": 200}, "connectivity": 26},
      {"_target_": "pipelines.transforms.KeepLargestComponentd", "keys": "pred",
       "applied_labels": ["liver"], "labels": {"1": "liver", "14": "lesion"}},
      {"_target_": "pipelines.transforms.FillHolesd", "keys": ["pred"], "applied_labels": [1]}
    ]
  }
}
"""


def test_dictionary_versions_from_bundle_config() -> None:
    parser = ConfigParser(json.loads(POSTPROCESSING_JSON))
    postprocessing = parser.get_parsed_content("postprocessing")

    volume = np.zeros((30, 20, 14), dtype=np.uint8)
    volume[2:12, 2:12, 2:12] = 1  # liver, hollow
    volume[4:10, 4:10, 4:10] = 0
    volume[20:25, 2:7, 2:10] = 1  # second liver piece, 200 voxels = 320 mm³: kept by islands, not by largest
    volume[14:17, 14:17, 2:9] = 14  # lesion, 63 voxels = 100.8 mm³ < 200
    data = {keys.PRED: as_meta(volume), keys.CASE_ID: "case_001"}

    out = postprocessing(data)
    pred = out[keys.PRED]
    assert isinstance(pred, MetaTensor)
    assert torch.equal(pred.affine, affine_for(SPACING_MM))
    result = volume_of(pred)
    assert (result[2:12, 2:12, 2:12] == 1).all()  # filled
    assert int((result == 1).sum()) == 1000
    assert int((result == 14).sum()) == 0
    assert out[keys.CASE_ID] == "case_001"
    assert data[keys.PRED] is not pred  # the input dictionary is not modified


@pytest.mark.parametrize(
    "wrapper",
    [
        lambda: RemoveSmallIslandsd(keys=keys.PRED, min_size_mm3=10),
        lambda: KeepLargestComponentd(keys=keys.PRED, applied_labels=1),
        lambda: FillHolesd(keys=keys.PRED),
    ],
)
def test_dictionary_error_names_the_key(wrapper) -> None:
    with pytest.raises(TypeError, match=r"key 'pred': .*got dtype float32"):
        wrapper()({keys.PRED: np.zeros((1, 4, 4, 4), np.float32)})


def test_dictionary_missing_keys() -> None:
    data = {keys.LABEL: as_meta(blob_map())}
    assert FillHolesd(keys=keys.PRED, allow_missing_keys=True)(data) == data
    with pytest.raises(KeyError):
        FillHolesd(keys=keys.PRED)(data)
