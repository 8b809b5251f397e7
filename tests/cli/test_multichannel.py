"""``medseg segment --image A --image B`` and ``medseg batch`` with a 2-channel Zoo-shaped bundle."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipelines.cli.main import main
from pipelines.io.hashing import input_sha256
from tests.helpers import write_nifti, write_zoo_bundle, zoo_inference_config

# On the bundle's own 1.5 x 1.5 x 2 mm RAS grid, so its Spacingd and Orientationd change nothing and
# the expected label map is known voxel for voxel.
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
AFFINE[:3, 3] = [-12.0, 5.0, 30.0]
SHAPE = (20, 18, 12)
BOX = (slice(5, 12), slice(4, 10), slice(3, 8))


def _bundle(root: Path) -> Path:
    """Two channels (T1c, FLAIR); a 1x1x1 convolution calls a voxel foreground where T1c > FLAIR.

    Swapping the channels turns the answer into its complement, so the order is visible in the result.
    """
    network = {"_target_": "torch.nn.Conv3d", "in_channels": 2, "out_channels": 2, "kernel_size": 1}
    metadata = {
        "name": "zoo_two_channel",
        "version": "0.0.1",
        "network_data_format": {
            "inputs": {"image": {"num_channels": 2, "channel_def": {"0": "T1c", "1": "FLAIR"}}},
            "outputs": {"pred": {"num_channels": 2, "channel_def": {"0": "background", "1": "tumour"}}},
        },
    }
    write_zoo_bundle(root, zoo_inference_config(network, intensity_range=(0, 1000)), metadata)
    conv = torch.nn.Conv3d(2, 2, 1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([[-40.0, 40.0], [40.0, -40.0]]).view(2, 2, 1, 1, 1)
        conv.bias.zero_()
    torch.save(conv.state_dict(), root / "models" / "model.pt")
    return root


def _images(folder: Path, flair_affine: np.ndarray = AFFINE) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    t1c = np.zeros(SHAPE, dtype=np.float32)
    t1c[BOX] = 800.0
    flair = np.full(SHAPE, 400.0, dtype=np.float32)
    return (
        write_nifti(folder / "case_t1c.nii.gz", t1c, AFFINE),
        write_nifti(folder / "case_flair.nii.gz", flair, flair_affine),
    )


def _truth() -> np.ndarray:
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[BOX] = 1
    return truth


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("bundle") / "zoo_two_channel")


def _segment(bundle: Path, out: Path, *args: str) -> int:
    return main(["-q", "segment", *args, "--bundle", str(bundle), "-o", str(out), "--device", "cpu",
                 "--precision", "fp32", "--outputs", "labels"])  # fmt: skip


def test_two_named_images_in_any_order_segment_onto_the_first_images_grid(tmp_path: Path, bundle: Path) -> None:
    t1c, flair = _images(tmp_path / "in")
    out = tmp_path / "out"
    assert _segment(bundle, out, "--image", f"FLAIR={flair}", "--image", f"t1c={t1c}") == 0
    saved = nib.load(out / "case_t1c" / "labels.nii.gz")
    np.testing.assert_array_equal(np.asarray(saved.dataobj), _truth())
    np.testing.assert_allclose(saved.affine, AFFINE, atol=1e-5)
    run = json.loads((out / "case_t1c" / "run.json").read_text())
    assert run["input"]["path"] == str(t1c.resolve())
    assert run["input"]["sha256"] == input_sha256([flair, t1c])  # the images as given
    channels = run["input"]["channels"]
    assert channels["order"] == "name" and channels["channel_grids"] == "refuse"
    assert [(c["index"], c["name"], c["path"], c["sha256"]) for c in channels["channels"]] == [
        (0, "T1c", str(t1c.resolve()), input_sha256(t1c)),
        (1, "FLAIR", str(flair.resolve()), input_sha256(flair)),
    ]


def test_a_case_folder_and_plain_positions_give_the_channel_order_too(tmp_path: Path, bundle: Path) -> None:
    t1c, flair = _images(tmp_path / "case7")
    out = tmp_path / "out"
    assert _segment(bundle, out, str(tmp_path / "case7")) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out / "case7" / "labels.nii.gz").dataobj), _truth())
    assert json.loads((out / "case7" / "run.json").read_text())["input"]["channels"]["order"] == "case-folder"
    # by position the caller's order is the channel order: swapped images give the complement
    assert _segment(bundle, out, "--image", str(flair), "--image", str(t1c), "--case-id", "swapped") == 0
    swapped = np.asarray(nib.load(out / "swapped" / "labels.nii.gz").dataobj)
    np.testing.assert_array_equal(swapped, 1 - _truth())
    assert json.loads((out / "swapped" / "run.json").read_text())["input"]["channels"]["order"] == "position"


def test_another_grid_is_refused_or_resampled_as_asked(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coarse = AFFINE @ np.diag([2.0, 2.0, 1.0, 1.0])  # same origin, twice the voxel size in-plane: still 400 inside
    t1c, flair = _images(tmp_path / "in", coarse)
    out = tmp_path / "out"
    assert _segment(bundle, out, "--image", f"T1c={t1c}", "--image", f"FLAIR={flair}") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"medseg: error: {flair}: channel 1 (FLAIR) is on another voxel grid")
    assert "--channel-grids resample" in err and not (out / "case_t1c").exists()
    args = ("--image", f"T1c={t1c}", "--image", f"FLAIR={flair}", "--channel-grids", "resample")
    assert _segment(bundle, out, *args) == 0
    labels = np.asarray(nib.load(out / "case_t1c" / "labels.nii.gz").dataobj)
    assert labels.shape == SHAPE
    run = json.loads((out / "case_t1c" / "run.json").read_text())
    (change,) = [c for c in run["corrections"] if c["kind"] == "channel_resampled"]
    assert change["channel"] == 1 and change["path"] == str(flair.resolve())
    assert change["from_grid"].startswith("shape (20, 18, 12) spacing 3x3x2 mm")
    assert change["coverage_fraction"] == 1.0
    assert run["input"]["channels"]["channels"][1]["grid"] == "resampled"


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (["{t1c}"], r"bundle takes 2 channels \(0 T1c, 1 FLAIR\) \(.*metadata.json\); got 1 image\(s\)"),
        (["T1c={t1c}", "T2={flair}"], r"T2=.*: unknown channel name 'T2'; bundle expects T1c, FLAIR \(.*\)"),
        (["T1c={t1c}", "{flair}"], r"name every channel image \(NAME=PATH\) or none"),
        (["T1c={t1c}", "T1C={flair}"], r"channel 'T1c' given twice"),
    ],
)
def test_wrong_channel_images_end_in_one_line(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str], images: list[str], message: str
) -> None:
    t1c, flair = _images(tmp_path / "in")
    args = [a for image in images for a in ("--image", image.format(t1c=t1c, flair=flair))]
    assert _segment(bundle, tmp_path / "out", *args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("medseg: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_input_and_images_together_are_refused(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t1c, flair = _images(tmp_path / "in")
    assert _segment(bundle, tmp_path / "out", str(t1c), "--image", str(flair)) == 1
    assert "give the input image (or case folder) or one --image per channel, not both" in capsys.readouterr().err


def test_a_manifest_case_with_two_images_runs_through_batch(tmp_path: Path, bundle: Path) -> None:
    t1c, flair = _images(tmp_path / "data")
    manifest = {
        "name": "two_channel",
        "modality": {"0": "T1c", "1": "FLAIR"},
        "labels": {"0": "background", "1": "tumour"},
        "test": [{"image": ["case_t1c.nii.gz", "case_flair.nii.gz"], "case_id": "c1"}],
    }
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    argv = ["-q", "batch", str(tmp_path / "data" / "dataset.json"), "--bundle", str(bundle), "-o", str(out),
            "--device", "cpu", "--precision", "fp32", "--outputs", "labels", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out / "c1" / "labels.nii.gz").dataobj), _truth())
    run = json.loads((out / "c1" / "run.json").read_text())
    assert [c["path"] for c in run["input"]["channels"]["channels"]] == [str(t1c.resolve()), str(flair.resolve())]
    assert run["input"]["sha256"] == input_sha256([t1c, flair])
    # resuming recognises the case as done: the ledger's input hash is the same value
    assert main([*argv, "--resume"]) == 0
    ledger = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    assert [r["status"] for r in ledger if r.get("case_id") == "c1"] == ["ok"]
