"""Multi-channel input: channel order from names or positions, case folders, one grid, run.json records."""

from __future__ import annotations

import functools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipelines.io.channels import (
    ChannelSpec,
    channel_corrections,
    channel_inputs,
    channel_spec,
    check_inputs_exist,
    read_input,
)
from pipelines.io.hashing import input_sha256
from pipelines.io.readers import read_volume
from tests.helpers import write_nifti

SOURCE = "b/configs/metadata.json"
SPEC = ChannelSpec(2, ("T1c", "FLAIR"), SOURCE)
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
AFFINE[:3, 3] = [-10.0, 4.0, 7.0]


def _meta(image: dict) -> dict:
    return {"network_data_format": {"inputs": {"image": image}}}


def _two(tmp_path: Path, affine1: np.ndarray = AFFINE, shape1: tuple[int, int, int] = (12, 10, 8)) -> list[Path]:
    rng = np.random.default_rng(0)
    a = write_nifti(tmp_path / "case_t1c.nii.gz", rng.normal(size=(12, 10, 8)).astype(np.float32), AFFINE)
    b = write_nifti(tmp_path / "case_flair.nii.gz", rng.normal(size=shape1).astype(np.float32) + 5, affine1)
    return [a, b]


# -- what the bundle declares ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "count", "names"),
    [
        ({}, 1, None),
        ({"num_channels": 1, "channel_def": {"0": "image"}}, 1, None),
        ({"num_channels": 2}, 2, None),
        ({"num_channels": 4, "channel_def": {"0": "T1c", "1": "T1", "2": "T2", "3": "FLAIR"}}, 4,
         ("T1c", "T1", "T2", "FLAIR")),
    ],
)  # fmt: skip
def test_channel_spec_reads_num_channels_and_channel_def(image: dict, count: int, names: tuple | None) -> None:
    spec = channel_spec(_meta(image), SOURCE)
    assert (spec.count, spec.names) == (count, names)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"num_channels": 0}, r"num_channels is 0; expected a positive whole number"),
        ({"num_channels": "2"}, r"num_channels is '2'; expected a positive whole number"),
        ({"num_channels": 2, "channel_def": {"0": "T1c", "2": "T2"}}, r"channel_def has keys \['0', '2'\]"),
        ({"num_channels": 2, "channel_def": {"0": "T1c", "1": "t1-C"}}, r"names \['T1c', 't1-C'\] repeat"),
    ],
)
def test_channel_spec_refuses_inconsistent_metadata(image: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{SOURCE}: .*{message}"):
        channel_spec(_meta(image), SOURCE)


# -- which image is which channel ------------------------------------------------------------


def test_names_put_the_images_in_the_bundles_order(tmp_path: Path) -> None:
    a, b = _two(tmp_path)
    inputs = channel_inputs([f"flair={b}", f"T1-C={a}"], SPEC)
    assert inputs.paths == (a, b) and inputs.given == (b, a) and inputs.order == "name"
    assert inputs.case_id == "case_t1c"


def test_plain_paths_are_taken_by_position(tmp_path: Path) -> None:
    a, b = _two(tmp_path)
    inputs = channel_inputs([str(b), str(a)], SPEC)
    assert inputs.paths == (b, a) and inputs.order == "position"


def test_a_case_folder_matches_files_by_the_channel_name_they_end_with(tmp_path: Path) -> None:
    a, b = _two(tmp_path)
    (tmp_path / "case_seg.nii.gz").write_bytes(b"not read")  # other files are left alone
    inputs = channel_inputs(tmp_path, SPEC)
    assert inputs.paths == (a, b) and inputs.order == "case-folder" and inputs.case_id == tmp_path.name


def test_a_single_channel_bundle_reads_its_one_input_unchanged(tmp_path: Path) -> None:
    a, _ = _two(tmp_path)
    spec = ChannelSpec(1, None, SOURCE)
    inputs = channel_inputs(a, spec)
    assert inputs.single and inputs.paths == (a,)
    volume = read_input(inputs, spec, read_volume)
    assert volume.channels is None and volume.channel_record is None and volume.sha256 == input_sha256(a)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["{a}"], r"bundle takes 2 channels \(0 T1c, 1 FLAIR\) \(b/configs/metadata.json\); got 1 image\(s\)"),
        (["{a}", "{b}", "{a}"], r"got 3 image\(s\)"),
        (["T1c={a}", "{b}"], r"name every channel image \(NAME=PATH\) or none"),
        (["T1c={a}", "T2={b}"], r"T2=.*: unknown channel name 'T2'; bundle expects T1c, FLAIR"),
        (["T1c={a}", "t1c={b}"], r"channel 'T1c' given twice"),
    ],
)
def test_wrong_channel_images_are_refused(tmp_path: Path, given: list[str], message: str) -> None:
    a, b = _two(tmp_path)
    with pytest.raises(ValueError, match=message):
        channel_inputs([g.format(a=a, b=b) for g in given], SPEC)


def test_names_for_a_bundle_without_channel_names_are_refused(tmp_path: Path) -> None:
    a, b = _two(tmp_path)
    with pytest.raises(ValueError, match=r"the bundle names no channels .*give the images in channel order"):
        channel_inputs([f"T1c={a}", f"FLAIR={b}"], ChannelSpec(2, None, SOURCE))


def test_one_image_for_a_single_channel_bundle_only(tmp_path: Path) -> None:
    a, b = _two(tmp_path)
    with pytest.raises(ValueError, match=r"bundle takes 1 input channel .*; expected one image, got 2 images"):
        channel_inputs([a, b], ChannelSpec(1, None, SOURCE))
    with pytest.raises(ValueError, match=r"bundle takes 1 input channel .*; expected one image, got a channel name"):
        channel_inputs([f"T1c={a}"], ChannelSpec(1, None, SOURCE))


def test_a_case_folder_with_a_channel_missing_is_refused(tmp_path: Path) -> None:
    _, b = _two(tmp_path)
    b.unlink()
    with pytest.raises(ValueError, match=r"no file for channel 'FLAIR'; expected one image per channel whose name"):
        channel_inputs(tmp_path, SPEC)


def test_a_series_uid_with_several_channel_images_is_refused(tmp_path: Path) -> None:
    a, b = _two(tmp_path)
    with pytest.raises(ValueError, match=r"series UID 1.2.3: a multi-channel input reads one series per channel"):
        channel_inputs([a, b], SPEC, series_uid="1.2.3")


def test_missing_inputs_fail_before_any_bundle_work(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gone\.nii\.gz"):
        check_inputs_exist([f"T1c={tmp_path / 'gone.nii.gz'}"])
    with pytest.raises(ValueError, match="no input image given"):
        check_inputs_exist([])


# -- reading: one grid -----------------------------------------------------------------------


def test_channels_on_one_grid_are_stacked_and_each_recorded(tmp_path: Path) -> None:
    a, b = _two(tmp_path)
    volume = read_input(channel_inputs([f"FLAIR={b}", f"T1c={a}"], SPEC), SPEC, read_volume)
    assert volume.channels.shape == (2, 12, 10, 8)
    np.testing.assert_array_equal(volume.channels[0], nib.load(a).get_fdata())
    np.testing.assert_array_equal(volume.channels[1], nib.load(b).get_fdata())
    assert volume.array is not None and np.shares_memory(volume.array, volume.channels)
    np.testing.assert_array_equal(volume.affine, AFFINE)
    assert volume.sha256 == input_sha256([b, a])  # the paths as given, as a batch ledger hashes them
    record = volume.channel_record
    assert record["order"] == "name" and record["corrections"] == []
    assert [(c["name"], c["path"], c["sha256"], c["grid"]) for c in record["channels"]] == [
        ("T1c", str(a.resolve()), input_sha256(a), "reference"),
        ("FLAIR", str(b.resolve()), input_sha256(b), "same"),
    ]


def test_the_same_voxels_in_another_axis_order_are_reordered_losslessly(tmp_path: Path) -> None:
    a, b = _two(tmp_path)
    flipped = nib.as_closest_canonical(nib.load(b))  # already RAS: make an LAS copy by flipping axis 0
    data = np.asarray(flipped.dataobj)[::-1]
    affine = flipped.affine @ np.array([[-1, 0, 0, 11], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    las = write_nifti(tmp_path / "las_flair.nii.gz", np.ascontiguousarray(data), affine)
    volume = read_input(channel_inputs([a, las], SPEC), SPEC, read_volume)
    np.testing.assert_array_equal(volume.channels[1], nib.load(b).get_fdata())
    (change,) = channel_corrections(volume)
    assert change["kind"] == "channel_reordered" and change["lossless"] and change["channel"] == 1
    assert volume.channel_record["channels"][1]["grid"] == "reordered"


def test_a_channel_on_another_grid_is_refused_by_default(tmp_path: Path) -> None:
    shifted = AFFINE.copy()
    shifted[:3, 3] += [0.75, 0, 0]
    a, b = _two(tmp_path, shifted)
    with pytest.raises(ValueError) as err:
        read_input(channel_inputs([a, b], SPEC), SPEC, read_volume)
    message = str(err.value)
    assert message.startswith(f"{b}: channel 1 (FLAIR) is on another voxel grid (shape (12, 10, 8) spacing 1.5x1.5x2")
    assert f"than channel 0 {a}" in message and "--channel-grids resample" in message


def test_a_channel_on_another_grid_is_resampled_when_asked_and_recorded(tmp_path: Path) -> None:
    coarse = np.diag([3.0, 3.0, 4.0, 1.0])
    coarse[:3, 3] = AFFINE[:3, 3]
    a, _ = _two(tmp_path)
    i = np.broadcast_to(np.arange(6)[:, None, None], (6, 5, 4))
    ramp = (coarse[0, 0] * i + coarse[0, 3]).astype(np.float32)  # world x, in mm: linear, so resampled exactly
    b = write_nifti(tmp_path / "case_flair.nii.gz", ramp, coarse)
    volume = read_input(channel_inputs([a, b], SPEC), SPEC, read_volume, channel_grids="resample")
    assert volume.channels.shape == (2, 12, 10, 8)
    x = AFFINE[0, 0] * np.arange(12) + AFFINE[0, 3]
    inside = x <= coarse[0, 0] * 5 + coarse[0, 3]  # within the coarse image's last voxel centre
    np.testing.assert_allclose(volume.channels[1][inside, 0, 0], x[inside], atol=1e-4)
    (change,) = channel_corrections(volume)
    assert change["kind"] == "channel_resampled" and change["interpolation"] == "linear"
    assert change["from_grid"].startswith("shape (6, 5, 4) spacing 3x3x4 mm")
    assert 0.5 <= change["coverage_fraction"] <= 1.0
    assert volume.channel_record["channels"][1]["grid"] == "resampled"


def test_a_resampled_channel_that_hardly_overlaps_is_refused(tmp_path: Path) -> None:
    far = AFFINE.copy()
    far[:3, 3] += [200.0, 0, 0]
    a, b = _two(tmp_path, far)
    with pytest.raises(ValueError, match=r"channel 1 \(FLAIR\) covers 0% of channel 0's field of view"):
        read_input(channel_inputs([a, b], SPEC), SPEC, read_volume, channel_grids="resample")


def test_the_nan_policy_applies_to_every_channel(tmp_path: Path) -> None:
    a, _ = _two(tmp_path)
    data = np.ones((12, 10, 8), dtype=np.float32)
    data[1, 2, 3] = np.nan
    b = write_nifti(tmp_path / "nan_flair.nii.gz", data, AFFINE)
    inputs = channel_inputs([a, b], SPEC)
    with pytest.raises(ValueError, match=r"nan_flair.nii.gz: 1 of 960 voxels are NaN or infinite"):
        read_input(inputs, SPEC, read_volume)
    volume = read_input(inputs, SPEC, read_volume, nan_policy="fill")
    assert np.isfinite(volume.channels).all()
    (change,) = channel_corrections(volume)
    assert change["kind"] == "non_finite_filled" and change["channel"] == 1


def test_reader_settings_reach_every_channel(tmp_path: Path) -> None:
    a, b = _two(tmp_path)
    seen: list[Path] = []

    def read(path: Path, **kwargs: object) -> object:
        seen.append(path)
        return read_volume(path)

    read_input(channel_inputs([a, b], SPEC), SPEC, functools.partial(read, allow_gaps=True))
    assert seen == [a, b]
