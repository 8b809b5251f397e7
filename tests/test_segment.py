"""medseg segment: the bundle runs end to end and labels land on the right voxels in physical space."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipelines.cli.main import main
from pipelines.segment import SegmentOptions, segment_case
from tests.helpers import cube_scan, write_nifti


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS"])
def test_labels_land_on_the_right_voxels_in_any_orientation(tmp_path: Path, zoo_bundle: Path, codes: str) -> None:
    image, affine, truth = cube_scan(codes)
    path = write_nifti(tmp_path / f"scan_{codes}.nii.gz", image, affine)
    result = segment_case(
        path, zoo_bundle, tmp_path / "out", options=SegmentOptions(device="cpu", precision="fp32", outputs=("labels",))
    )
    assert result.case_dir == tmp_path / "out" / f"scan_{codes}"
    labels_img = nib.load(result.files["labels"])
    assert labels_img.shape == image.shape
    np.testing.assert_array_equal(labels_img.affine, nib.load(path).affine)
    labels = np.asarray(labels_img.dataobj)
    assert labels.dtype == np.uint8
    dice = 2 * np.sum((labels == 1) & truth) / (np.sum(labels == 1) + np.sum(truth))
    assert dice > 0.9, f"{codes}: the box was segmented at the wrong place (Dice {dice:.3f})"


def test_run_json_records_the_run(tmp_path: Path, zoo_bundle: Path) -> None:
    image, affine, _ = cube_scan("LPS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    result = segment_case(
        path, zoo_bundle, tmp_path / "out", case_id="case7", options=SegmentOptions(device="cpu", outputs=("labels",))
    )
    run = json.loads((tmp_path / "out" / "case7" / "run.json").read_text())
    assert run["input"]["path"] == str(path.resolve())
    assert len(run["input"]["sha256"]) == 64
    assert run["bundle"]["name"] == "zoo_threshold" and run["bundle"]["version"] == "0.0.1"
    assert len(run["bundle"]["model_sha256"]) == 64
    assert run["device"] == "cpu" and run["precision"] in ("fp32", "bf16")
    assert set(run["seconds"]) == {"load", "preprocess", "infer", "postprocess", "save"}
    assert {"medseg", "monai", "torch", "python"} <= set(run["software"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case7"]  # no staging left over
    assert result.seconds["infer"] > 0


def test_cli_segment_exit_code_and_output(tmp_path: Path, zoo_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, affine, _ = cube_scan("RAS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    code = main(
        [
            "segment",
            str(path),
            "--bundle",
            str(zoo_bundle),
            "--output",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--outputs",
            "labels",
        ]
    )
    assert code == 0
    assert (tmp_path / "out" / "scan" / "labels.nii.gz").is_file()
    assert "wrote" in capsys.readouterr().out


# -- bad input: one line naming the file, exit code 1, nothing left in OUTDIR -------------------


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    import gzip

    empty = tmp_path / "empty_folder"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    text = tmp_path / "notes.nii.gz"
    text.write_bytes(gzip.compress(b"hello" * 100))
    full = write_nifti(
        tmp_path / "full.nii.gz", np.random.default_rng(0).random((40, 40, 40)).astype(np.float32), np.eye(4)
    )
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    flat = write_nifti(tmp_path / "flat.nii.gz", np.zeros((20, 20), np.float32), np.eye(4))
    four = write_nifti(tmp_path / "four.nii.gz", np.zeros((8, 8, 8, 3), np.float32), np.eye(4))
    return {
        "missing": (tmp_path / "missing.nii.gz", "missing.nii.gz: no such file or folder"),
        "no dicom": (empty, "empty_folder: no DICOM series found"),
        "not an image": (text, "notes.nii.gz: not a readable NIfTI image"),
        "truncated": (cut, "cut.nii.gz: truncated or corrupt image data"),
        "2d": (flat, "flat.nii.gz: expected a 3D image, got shape (20, 20)"),
        "4d": (four, "four.nii.gz: expected a 3D image, got shape (8, 8, 8, 3)"),
    }


@pytest.mark.parametrize("case", ["missing", "no dicom", "not an image", "truncated", "2d", "4d"])
def test_bad_inputs_fail_cleanly(
    tmp_path: Path, zoo_bundle: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    path, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    code = main(["segment", str(path), "--bundle", str(zoo_bundle), "--output", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir()), "no partial output may be left behind"


def test_bundle_without_inference_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, affine, _ = cube_scan("RAS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    (tmp_path / "nobundle" / "configs").mkdir(parents=True)
    code = main(["segment", str(path), "--bundle", str(tmp_path / "nobundle"), "--output", str(tmp_path / "out")])
    assert code == 1
    assert "nobundle/configs/inference.json: bundle has no inference config" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_weights_say_where_they_go(
    tmp_path: Path, zoo_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (zoo_bundle / "models" / "model.pt").unlink()
    image, affine, _ = cube_scan("RAS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    code = main(["segment", str(path), "--bundle", str(zoo_bundle), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "models/model.pt: bundle zoo_threshold has no trained weights" in err and "medseg train" in err
    assert not (tmp_path / "out").exists()


def test_cuda_request_without_cuda(tmp_path: Path, zoo_bundle: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        segment_case(tmp_path, zoo_bundle, tmp_path / "out", options=SegmentOptions(device="cuda"))


# -- the real CT bundle on the real scans (random weights: geometry, not accuracy) ----------------


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("sub", "case_id"), [("ct_abdomen_3mm/image.nii.gz", "image"), ("ct_dicom_series/dicom", "dicom")]
)
def test_ct_bundle_on_shared_scans_writes_labels_on_the_input_grid(
    tmp_path: Path, shared_data: Path, unet_bundle: Path, sub: str, case_id: str
) -> None:
    from pipelines.io.readers import read_volume

    source = shared_data / sub
    code = main(
        ["segment", str(source), "--bundle", str(unet_bundle), "--output", str(tmp_path / "out"), "--outputs", "labels"]
    )
    assert code == 0
    volume = read_volume(source)
    labels = nib.load(tmp_path / "out" / case_id / "labels.nii.gz")
    assert labels.shape == volume.shape
    np.testing.assert_allclose(labels.affine, volume.affine, atol=1e-4)
    assert set(np.unique(np.asarray(labels.dataobj))) <= set(range(6))
    run = json.loads((tmp_path / "out" / case_id / "run.json").read_text())
    # under bf16 the U-Net's layers that read the image stay in fp32, and run.json says which
    expected = [] if run["precision"] == "fp32" else ["model.0.residual", "model.0.conv.unit0.conv"]
    assert run["fp32_layers"] == expected


@pytest.mark.shared_data
@pytest.mark.slow
def test_all_outputs_for_the_shared_dicom_series(
    tmp_path: Path, shared_data: Path, unet_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """labels, DICOM-SEG, stats and preview from one DICOM run; stats.csv agrees with the label map."""
    import csv

    import pydicom

    code = main(
        [
            "segment",
            str(shared_data / "ct_dicom_series" / "dicom"),
            "--bundle",
            str(unet_bundle),
            "--output",
            str(tmp_path / "out"),
            "--outputs",
            "labels,dicom-seg,stats,preview",
        ]
    )
    assert code == 0
    case = tmp_path / "out" / "dicom"
    assert sorted(p.name for p in case.iterdir()) == [
        "labels.nii.gz",
        "preview.png",
        "run.json",
        "seg.dcm",
        "stats.csv",
        "stats.json",
    ]
    labels = np.asarray(nib.load(case / "labels.nii.gz").dataobj)
    rows = list(csv.DictReader((case / "stats.csv").open()))
    assert rows, "random weights still label something"
    for row in rows:
        assert int(row["voxels"]) == int(np.sum(labels == int(row["label"])))
        expected_ml = int(row["voxels"]) * 0.9765625 * 0.9765625 * 2.0 / 1000
        assert float(row["volume_ml"]) == pytest.approx(expected_ml, rel=1e-6)
    seg = pydicom.dcmread(case / "seg.dcm")
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) == len(rows)
    run = json.loads((case / "run.json").read_text())
    assert run["options"]["outputs"] == ["labels", "dicom-seg", "stats", "preview"]
    assert run["input"]["format"] == "dicom"
    table = capsys.readouterr().out
    assert "structure" in table and "volume mL" in table  # the per-structure table printed when done


@pytest.mark.slow
def test_plain_monai_bundle_run_with_the_ct_bundle(tmp_path: Path, unet_bundle: Path) -> None:
    """The bundle also runs without medseg's runner: `python -m monai.bundle run` with overrides."""
    import subprocess
    import sys

    image, affine, _ = cube_scan("LPS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(unet_bundle / "configs" / "inference.json"),
        "--bundle_root",
        str(unet_bundle),
        "--datalist",
        f"['{path}']",
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = nib.load(tmp_path / "eval" / "scan_seg.nii.gz")
    assert saved.shape == image.shape
    np.testing.assert_allclose(saved.affine, affine, atol=1e-4)


def test_multichannel_bundle_given_one_image_is_refused_with_a_clear_error(tmp_path: Path, zoo_bundle: Path) -> None:
    meta = {
        "name": "four_channel",
        "version": "0.0.1",
        "network_data_format": {"inputs": {"image": {"num_channels": 4}}},
    }
    (zoo_bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"bundle takes 4 channels \(unnamed\) .*; got 1 image\(s\)"):
        segment_case(tmp_path, zoo_bundle, tmp_path / "out", options=SegmentOptions(device="cpu"))


# -- one case reads each thing once ----------------------------------------------------------


def test_a_case_reads_input_weights_and_metadata_once(
    tmp_path: Path, zoo_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input, weights and metadata.json are each opened once per case; run.json written once;
    outputs are hashed by their writer (the hashes match the files) and never read back."""
    import builtins
    import hashlib
    import io

    from pipelines.segment import Segmenter

    image, affine, _ = cube_scan("LPS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    opened: list[tuple[str, str]] = []
    real_open = builtins.open

    def counting_open(file, mode="r", *args, **kwargs):
        opened.append((str(Path(file).resolve()) if isinstance(file, str | Path) else repr(file), mode))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    segmenter = Segmenter(zoo_bundle, SegmentOptions(device="cpu", precision="fp32", outputs=("labels", "stats")))
    result = segmenter.run(path, tmp_path / "out")
    monkeypatch.undo()

    def count(target: Path, write: bool = False) -> int:
        return sum(1 for name, mode in opened if name == str(target.resolve()) and (("w" in mode) == write))

    assert count(path) == 1
    assert count(zoo_bundle / "models" / "model.pt") == 1
    assert count(zoo_bundle / "configs" / "metadata.json") == 1
    staged_reads = [name for name, mode in opened if "r" in mode and "out" in Path(name).parts]
    assert staged_reads == [], f"outputs read back: {staged_reads}"
    # written once, to a temporary name beside it (.run-XXXX.json) that is then renamed
    writes_of_run_json = [n for n, mode in opened if "w" in mode and Path(n).name.startswith((".run-", "run.json"))]
    assert len(writes_of_run_json) == 1
    for key, file in result.files.items():
        assert result.sha256[key] == hashlib.sha256(file.read_bytes()).hexdigest(), key
    run = json.loads(result.files["run"].read_text())
    assert run["input"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (
        run["bundle"]["model_sha256"] == hashlib.sha256((zoo_bundle / "models" / "model.pt").read_bytes()).hexdigest()
    )


# -- values and output folders: refused before inference, nothing left behind ----------------


def test_nan_voxels_are_refused_and_nothing_is_written(
    tmp_path: Path, zoo_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, affine, _ = cube_scan("RAS")
    image = image.astype(np.float32)
    image[3, 4, 5] = np.nan
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    out = tmp_path / "out"
    code = main(["segment", str(path), "--bundle", str(zoo_bundle), "--output", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "1 of 25,920 voxels are NaN or infinite (first at index (3, 4, 5))" in err and "--nan-policy fill" in err
    assert not out.exists() or not any(out.iterdir())


def test_nan_fill_policy_is_recorded_in_run_json(tmp_path: Path, zoo_bundle: Path) -> None:
    image, affine, truth = cube_scan("RAS")
    image = image.astype(np.float32)
    image[0, 0, 0:4] = np.inf
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    code = main(
        ["segment", str(path), "--bundle", str(zoo_bundle), "--output", str(tmp_path / "out"), "--device", "cpu",
         "--precision", "fp32", "--outputs", "labels", "--nan-policy", "fill"]
    )  # fmt: skip
    assert code == 0
    run = json.loads((tmp_path / "out" / "scan" / "run.json").read_text())
    assert run["corrections"] == [
        {"kind": "non_finite_filled", "voxels": 4, "fill_value": 100.0, "first_index": [0, 0, 0]}
    ]
    labels = np.asarray(nib.load(tmp_path / "out" / "scan" / "labels.nii.gz").dataobj)
    assert (labels[0, 0, 0:4] == 0).all() and (labels.astype(bool) == truth).mean() > 0.95


@pytest.mark.parametrize("problem", ["file", "file_parent"])
def test_output_folder_problems_are_found_before_reading(
    tmp_path: Path, zoo_bundle: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    image, affine, _ = cube_scan("RAS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    (tmp_path / "taken").write_text("a file where the output folder should be")
    out = tmp_path / "taken" if problem == "file" else tmp_path / "taken" / "out"
    code = main(["segment", str(path), "--bundle", str(zoo_bundle), "--output", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "is a file, expected a folder" in err


def test_a_failed_write_names_the_output_and_keeps_nothing(
    tmp_path: Path, zoo_bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills up while the outputs are written: one line naming the output file."""
    import errno

    import pipelines.segment as segment

    def disk_full(data: bytes, target: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(segment, "write_bytes", disk_full)  # run.json is the last file written
    image, affine, _ = cube_scan("RAS")
    path = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    out = tmp_path / "out"
    code = main(["segment", str(path), "--bundle", str(zoo_bundle), "--output", str(out), "--device", "cpu",
                 "--precision", "fp32", "--outputs", "labels"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"{out / 'scan' / 'run.json'}: could not write the case's outputs (No space left on device)" in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("tilt_mm_per_slice", [0.0, 1.5])
def test_uneven_dicom_series_is_corrected_and_its_seg_references_the_acquired_slices(
    tmp_path: Path, zoo_bundle: Path, tilt_mm_per_slice: float
) -> None:
    """A series with one slice missing (and, second case, gantry tilt too): labels on the corrected
    regular grid, agreeing with the corrected image, the correction in run.json, and DICOM-SEG
    frames that reference only the instances that exist."""
    import highdicom as hd
    import pydicom

    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_dicom_series
    from pipelines.io.readers import read_volume

    phantom = make_ct_phantom(5, shape=(40, 36, 12), spacing_mm=(6.0, 6.0, 4.0))
    folder = tmp_path / "series"
    files = write_dicom_series(phantom, folder)
    by_position = sorted(
        files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
    )
    for n, f in enumerate(by_position):
        ds = pydicom.dcmread(f)
        col = np.asarray([float(v) for v in ds.ImageOrientationPatient[3:]])
        ds.ImagePositionPatient = [
            float(v) for v in np.asarray(ds.ImagePositionPatient, float) + n * tilt_mm_per_slice * col
        ]
        ds.save_as(f)
    missing = pydicom.dcmread(by_position[5], stop_before_pixels=True).SOPInstanceUID
    by_position[5].unlink()
    options = SegmentOptions(device="cpu", precision="fp32", outputs=("labels", "dicom-seg"))
    result = segment_case(folder, zoo_bundle, tmp_path / "out", options=options)
    run = json.loads(result.files["run"].read_text())
    correction = run["input"]["geometry_correction"]
    expected_kind = "uneven_spacing+gantry_tilt" if tilt_mm_per_slice else "uneven_spacing"
    assert correction["kind"] == expected_kind and correction["planes"] == 12
    labels = nib.load(result.files["labels"])
    np.testing.assert_allclose(labels.affine, phantom.affine, atol=1e-4)  # the regular orthogonal grid, exactly
    bright = read_volume(folder).array > 500  # what the threshold bundle finds, on the corrected grid
    found = np.asarray(labels.dataobj) == 1
    assert 2 * (found & bright).sum() / (found.sum() + bright.sum()) > 0.9
    seg = hd.seg.segread(result.files["dicom_seg"])
    referenced = {
        ref.ReferencedSOPInstanceUID for frame in seg.PerFrameFunctionalGroupsSequence
        for item in frame.DerivationImageSequence for ref in item.SourceImageSequence
    }  # fmt: skip
    acquired = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in folder.iterdir()}
    assert referenced and referenced <= acquired and missing not in referenced


def test_the_loader_is_found_behind_a_reference_and_never_built() -> None:
    """Zoo bundles often write "transforms": "$@preprocessing_transforms"; the loader's settings are
    read from the config and it is replaced by an identity (its reader package is never needed)."""
    from monai.bundle import ConfigParser

    from pipelines.segment import take_loader

    transforms = [
        {"_target_": "LoadImaged", "keys": "image", "reader": "ITKReader", "ensure_channel_first": True},
        {"_target_": "EnsureTyped", "keys": "image"},
    ]
    parser = ConfigParser(
        {"pre": transforms, "preprocessing": {"_target_": "Compose", "transforms": "$@pre"}, "bundle_root": "."}
    )
    settings = take_loader(parser)
    assert settings.ensure_channel_first is True and settings.dtype is np.float32
    built = parser.get_parsed_content("preprocessing").transforms
    assert [type(t).__name__ for t in built] == ["Identityd", "EnsureTyped"]
    with pytest.raises(ValueError, match=r"preprocessing must start with LoadImaged"):
        take_loader(ConfigParser({"preprocessing": {"_target_": "Compose", "transforms": []}}))
