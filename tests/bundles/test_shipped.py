"""The bundles end to end: a Model Zoo style bundle, the UNETR and the MRI bundle through `medseg segment`,
and their training and evaluation configs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipelines.bundles.bundle import load_bundle, parse_config
from pipelines.cli.main import main
from tests.helpers import (
    BUNDLES,
    copy_bundle_with_random_weights,
    oriented_affine,
    write_nifti,
    write_zoo_bundle,
    zoo_inference_config,
)

SPLEEN_STYLE_NETWORK = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 1,
    "norm": "batch",
}
"""A small two-class network for a spleen-style bundle written only with MONAI components and Zoo key names."""

SPLEEN_STYLE_METADATA = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json",
    "version": "0.5.2",
    "changelog": {"0.5.2": "smaller network for tests", "0.5.1": "first version"},
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "2.4.6",
    "required_packages_version": {"nibabel": "5.4.2"},
    "name": "Spleen CT segmentation (test)",
    "task": "Decathlon spleen segmentation",
    "description": "A pre-trained model for volumetric (3D) segmentation of the spleen from CT image",
    "authors": "test",
    "copyright": "Copyright (c) test",
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "hounsfield",
                "modality": "CT",
                "num_channels": 1,
                "spatial_shape": [32, 32, 32],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
                "channel_def": {"0": "image"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": [32, 32, 32],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
                "channel_def": {"0": "background", "1": "spleen"},
            }
        },
    },
}


@pytest.fixture()
def spleen_style_bundle(tmp_path: Path) -> Path:
    root = write_zoo_bundle(
        tmp_path / "spleen_ct_segmentation", zoo_inference_config(SPLEEN_STYLE_NETWORK), SPLEEN_STYLE_METADATA
    )
    torch.manual_seed(10)  # a seed whose random network labels both classes widely on abdomen_scan
    parser = parse_config(load_bundle(root))
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    return root


def abdomen_scan(
    path: Path, codes: str = "LPS", shape=(56, 48, 30), spacing=(2.0, 2.0, 3.0)
) -> tuple[Path, np.ndarray]:
    """A CT-like scan: a soft-tissue body with a brighter ellipsoid, written as NIfTI in ``codes``."""
    affine = oriented_affine(codes, shape, spacing=spacing)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    body = (grid**2).sum(0) < 0.9
    organ = (((grid - np.array([0.3, -0.2, 0.1])[:, None, None, None]) / 0.35) ** 2).sum(0) < 1
    rng = np.random.default_rng(0)
    image = np.where(body, 40, -1000) + np.where(organ, 80, 0) + rng.normal(0, 8, shape)
    return write_nifti(path, image.astype(np.int16), affine), affine


def test_zoo_style_bundle_runs_unchanged_and_matches_plain_monai(tmp_path: Path, spleen_style_bundle: Path) -> None:
    """medseg segment on a Zoo bundle gives the label map `monai.bundle run` gives, on the input's grid."""
    from monai.bundle import run

    scan, affine = abdomen_scan(tmp_path / "spleen_07.nii.gz")
    code = main(
        [
            "segment",
            str(scan),
            "--bundle",
            str(spleen_style_bundle),
            "--output",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--outputs",
            "labels",
        ]
    )
    assert code == 0
    ours = nib.load(tmp_path / "out" / "spleen_07" / "labels.nii.gz")
    assert ours.shape == (56, 48, 30)
    np.testing.assert_allclose(ours.affine, affine, atol=1e-5)
    labels = np.asarray(ours.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    assert 0.05 < labels.mean() < 0.95, "both classes must be common for the comparison below to mean much"

    run(
        config_file=str(spleen_style_bundle / "configs" / "inference.json"),
        meta_file=str(spleen_style_bundle / "configs" / "metadata.json"),
        bundle_root=str(spleen_style_bundle),
        datalist=[str(scan)],
        output_dir=str(tmp_path / "plain"),
        device="$torch.device('cpu')",
        **{"evaluator#amp": False},  # the Zoo default (amp on) is for CUDA
    )
    plain = nib.load(tmp_path / "plain" / "spleen_07_seg.nii.gz")
    np.testing.assert_allclose(plain.affine, affine, atol=1e-5)
    agreement = np.mean(np.rint(np.asarray(plain.dataobj)).astype(np.uint8) == labels)
    assert agreement > 0.999, f"medseg and plain monai.bundle run disagree on {1 - agreement:.2%} of the voxels"


def test_zoo_style_bundle_passes_the_metadata_and_config_checks(spleen_style_bundle: Path) -> None:
    from pipelines.bundles.conformance import check_bundle

    problems = check_bundle(spleen_style_bundle, checks=("metadata", "configs", "net_in_out"))
    assert problems == []


# -- every shipped bundle ------------------------------------------------------------------------

SHIPPED = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir())


def _strings(node: object) -> list[str]:
    """Every string in a parsed JSON document (keys and values)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _leaves_the_bundle(text: str) -> bool:
    """Whether a config string names a path out of the bundle: a ``..`` step, or an absolute or home path."""
    steps = re.split(r"[/\\'\"\s]+", text)
    return ".." in steps or text.startswith(("/", "~"))


@pytest.mark.parametrize(
    ("text", "leaves"),
    [
        ("$@bundle_root + '/../../data_manifests/ct_phantoms.json'", True),  # what train.json used to hold
        ("/workspace/data/Task09_Spleen", True),
        ("~/data", True),
        ("$@bundle_root + '/models/model.pt'", False),
        ("$@bundle_root + '/eval'", False),
        ("MANIFEST-NOT-SET: pass --manifest FILE", False),
    ],
)
def test_leaving_path_rule(text: str, leaves: bool) -> None:
    assert _leaves_the_bundle(text) is leaves


@pytest.mark.parametrize("name", SHIPPED)
def test_no_config_names_a_path_that_leaves_the_bundle(name: str) -> None:
    """Self-contained bundles: no config of a shipped bundle names a path outside its folder."""
    configs = sorted((BUNDLES / name / "configs").glob("*.json"))
    assert configs
    found = [
        f"{path.name}: {text!r}"
        for path in configs
        for text in _strings(json.loads(path.read_text()))
        if _leaves_the_bundle(text)
    ]
    assert found == [], f"paths out of bundles/{name}: {found}"


# -- the UNETR bundle -----------------------------------------------------------------------------


@pytest.mark.slow
def test_unetr_bundle_segments_a_small_phantom_on_its_grid(tmp_path: Path) -> None:
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.tissues import CT_STRUCTURES
    from pipelines.data.phantoms.write import write_nifti

    bundle = copy_bundle_with_random_weights("ct_multiorgan_unetr", tmp_path / "bundles")
    ids = {n: i for n, i in CT_STRUCTURES.items() if n != "liver_tumor"}
    phantom = make_ct_phantom(5, shape=(64, 52, 30), spacing_mm=(3.0, 3.0, 4.0), orientation="LPS", label_ids=ids)
    image, _ = write_nifti(phantom, tmp_path / "case")
    code = main(
        [
            "segment",
            str(image),
            "--bundle",
            str(bundle),
            "--output",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--outputs",
            "labels",
            "--case-id",
            "unetr",
        ]
    )
    assert code == 0
    labels = nib.load(tmp_path / "out" / "unetr" / "labels.nii.gz")
    assert labels.shape == phantom.image.shape
    np.testing.assert_allclose(labels.affine, phantom.affine, atol=1e-5)
    assert set(np.unique(np.asarray(labels.dataobj))) <= set(range(14))


@pytest.mark.slow
def test_shipped_unetr_weights_run_from_git_and_qc_flags_what_they_miss(tmp_path: Path) -> None:
    """The float16 weights in git (< 50 MB) run from a fresh clone and segment the first test-split
    phantom (a seed no training or validation case uses: a wide square field of view, 345 mm, with
    air around the body), drawn as the recipe draws its phantoms since 0.5.0 (kidneys and adrenal
    glands in their perirenal fat), on the input's grid. Measured here with 0.5.0: spleen 0.93, kidneys
    0.95 / 0.95, liver 0.92, aorta 0.90, stomach 0.84, esophagus 0.73, left adrenal gland 0.84, the right 0.
    Nothing is labelled in the air around the body: before inference cropped to the body (0.4.0), the
    network called that air "liver" and keeping the largest liver component then threw the real liver
    away (Dice 0). QC flags the case in run.json, and any expected organ it misses by name (the right
    adrenal gland, which 0.5.0 never finds), so the weakness is never passed silently."""
    from pipelines.data.datasets import SEEDS, ct_case_geometry
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.tissues import CT_STRUCTURES
    from pipelines.data.phantoms.write import write_nifti
    from pipelines.metrics import segmentation_metrics

    bundle = BUNDLES / "ct_multiorgan_unetr"
    assert (bundle / "models" / "model.pt").stat().st_size < 50e6  # the size limit for git
    ids = {n: i for n, i in CT_STRUCTURES.items() if n != "liver_tumor"}
    case = ct_case_geometry(SEEDS["test"][0])
    assert case.shape[0] == case.shape[1] and case.shape[0] * case.spacing_mm[0] > 330  # a wide square FOV
    phantom = make_ct_phantom(
        case.seed,
        shape=case.shape,
        spacing_mm=case.spacing_mm,
        orientation=case.orientation,
        label_ids=ids,
        perirenal_fat=True,
    )
    image, _ = write_nifti(phantom, tmp_path / "case")
    args = ["segment", str(image), "--bundle", str(bundle), "--output", str(tmp_path / "out"), "--device", "cpu"]
    assert main([*args, "--outputs", "labels", "--case-id", "held_out"]) == 0
    labels = nib.load(tmp_path / "out" / "held_out" / "labels.nii.gz")
    np.testing.assert_allclose(labels.affine, phantom.affine, atol=1e-5)
    pred = np.asarray(labels.dataobj)
    names = {i: n for n, i in ids.items()}
    scores = segmentation_metrics(pred, phantom.label, spacing_mm=case.spacing_mm, labels=names)
    found = {n: round(s["dice"], 3) for n, s in scores.items()}
    floors = {"spleen": 0.8, "kidney_right": 0.8, "kidney_left": 0.8, "liver": 0.8, "aorta": 0.8, "stomach": 0.6}
    floors["esophagus"] = 0.5  # found since 0.4.0's second stage (0.3 then)
    floors["adrenal_gland_left"] = 0.6  # found since 0.5.0 (8-voxel tokens)
    for name, floor in floors.items():
        assert scores[name]["dice"] > floor, (name, found)
    in_air = (pred > 0) & (phantom.image < -900) & (phantom.label == 0)
    assert in_air.sum() < 0.001 * (pred > 0).sum(), f"{in_air.sum()} labelled voxels in air"
    quality = json.loads((tmp_path / "out" / "held_out" / "run.json").read_text())["quality"]
    assert quality["flagged"]
    expected = load_bundle(bundle).metadata["medseg_qc"]["expected_structures"]
    assert {"adrenal_gland_right", "adrenal_gland_left"} <= set(expected)  # a weakness named, never silent
    for name in expected:
        if not (pred == ids[name]).any():
            assert f"{name}: expected by the bundle, not found" in quality["reasons"]


def test_unetr_training_patches_are_class_balanced_64_cubes(tmp_path: Path) -> None:
    """train.json's sampling: 2 patches of 64³ per case (the network's img_size), indices precomputed
    and not carried along."""
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.tissues import CT_STRUCTURES
    from pipelines.data.phantoms.write import write_nifti

    ids = {n: i for n, i in CT_STRUCTURES.items() if n != "liver_tumor"}
    phantom = make_ct_phantom(1, shape=(60, 48, 30), spacing_mm=(3.0, 3.0, 4.0), orientation="LAS", label_ids=ids)
    image, label = write_nifti(phantom, tmp_path / "case")
    parser = parse_config(load_bundle(BUNDLES / "ct_multiorgan_unetr"), "train", {"manifest": "unused"})
    patches = parser.get_parsed_content("train#preprocessing")({"image": str(image), "label": str(label)})
    assert len(patches) == parser["samples_per_case"] == 2
    assert parser["network_def"]["img_size"] == "@patch_size" and parser["patch_size"] == [64, 64, 64]
    for patch in patches:
        assert tuple(patch["image"].shape) == (1, 64, 64, 64) and tuple(patch["label"].shape) == (1, 64, 64, 64)
        assert patch["label"].dtype == torch.long and "label_cls_indices" not in patch


# -- the MRI brain tumour bundle ------------------------------------------------------------------


@pytest.mark.shared_data
def test_mri_bundle_on_the_shared_brain_scan_keeps_its_exact_grid(tmp_path: Path, shared_data: Path) -> None:
    from pipelines.io.readers import read_volume

    bundle = copy_bundle_with_random_weights("mri_brain_tumor", tmp_path / "bundles")
    source = shared_data / "mri_brain_tumor" / "image.nrrd"
    code = main(
        [
            "segment",
            str(source),
            "--bundle",
            str(bundle),
            "--output",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--outputs",
            "labels",
        ]
    )
    assert code == 0
    volume = read_volume(source)
    labels = nib.load(tmp_path / "out" / "image" / "labels.nii.gz")
    assert labels.shape == volume.shape == (256, 256, 25)
    np.testing.assert_allclose(labels.affine, volume.affine, atol=1e-6)
    assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1}


def test_mri_bundle_takes_several_contrasts_as_channels(tmp_path: Path) -> None:
    """A manifest entry listing four contrast files loads as four channels; num_channels sizes the network."""
    from pipelines.data.datasets import make_brain_dataset
    from pipelines.data.manifests.model import load_manifest
    from pipelines.data.manifests.validate import validate_manifest
    from pipelines.data.phantoms.tissues import MR_CONTRASTS
    from pipelines.train import datalist

    manifest = make_brain_dataset(
        tmp_path / "data", BUNDLES / "mri_brain_tumor", counts={"training": 1, "test": 1}, channels=4, fov_scale=0.3
    )
    assert validate_manifest(manifest) == []
    loaded = load_manifest(manifest)
    assert loaded.modality == ",".join(MR_CONTRASTS) and loaded.labels == {0: "background", 1: "tumor"}
    case = datalist(manifest, "training")[0]
    assert [Path(p).name for p in case["image"]] == [f"image_{c.lower()}.nii.gz" for c in MR_CONTRASTS]

    parser = parse_config(
        load_bundle(BUNDLES / "mri_brain_tumor"), "train", {"manifest": str(manifest), "num_channels": 4}
    )
    data = parser.get_parsed_content("validate#preprocessing")(case)
    first = nib.load(case["image"][0])
    assert data["image"].shape[0] == 4 and data["label"].shape[0] == 1
    assert data["image"].shape[1:] == data["label"].shape[1:]
    # channel order = file order: channel 2 (T2) differs from channel 0 (T1c)
    assert not torch.allclose(data["image"][0], data["image"][2])
    assert first.shape == nib.load(case["label"]).shape
    network = parser.get_parsed_content("network_def")
    assert network(torch.rand(1, 4, 32, 32, 16)).shape == (1, 2, 32, 32, 16)

    patches = parser.get_parsed_content("train#preprocessing")(case)
    assert len(patches) == parser["samples_per_case"] and tuple(patches[0]["image"].shape) == (4, 96, 96, 32)


def test_mri_evaluation_config_saves_predictions_on_the_image_grid(tmp_path: Path) -> None:
    """evaluate.json over train.json: dataset from the manifest's test split, Invertd back to the image grid."""
    from monai.bundle import ConfigParser

    from pipelines.data.datasets import make_brain_dataset

    manifest = make_brain_dataset(tmp_path / "data", BUNDLES / "mri_brain_tumor", counts={"test": 1}, fov_scale=0.3)
    root = BUNDLES / "mri_brain_tumor"
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / "train.json"), str(root / "configs" / "evaluate.json")])
    parser.update({"bundle_root": str(root), "manifest": str(manifest), "output_dir": str(tmp_path / "pred")})
    item = parser.get_parsed_content("validate#dataset")[0]
    item["pred"] = torch.stack([-item["image"][0], item["image"][0]])  # "tumour" where brighter than average
    out = parser.get_parsed_content("validate#postprocessing")(item)
    saved = nib.load(tmp_path / "pred" / "test" / "brain_50000" / "image_seg.nii.gz")
    image = nib.load(tmp_path / "data" / "test" / "brain_50000" / "image.nii.gz")
    assert saved.shape == image.shape
    np.testing.assert_allclose(saved.affine, image.affine, atol=1e-5)
    assert out["pred"].shape[0] == 2  # one-hot for the Dice metric


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "bundle_name"),
    [
        ("train_ct_unet.py", "ct_abdomen_unet"),
        ("train_mri_tumor.py", "mri_brain_tumor"),
        ("train_unetr.py", "ct_multiorgan_unetr"),
    ],
)
def test_weights_script_smoke_run(tmp_path: Path, script: str, bundle_name: str) -> None:
    """A weights script end to end (data, one epoch of training, evaluation) on a copy of its bundle."""
    import subprocess
    import sys

    from tests.helpers import REPO

    bundle = copy_bundle_with_random_weights(bundle_name, tmp_path)
    (bundle / "models" / "model.pt").unlink()  # the script must write it
    command = [
        sys.executable,
        str(REPO / "scripts" / script),
        "--bundle",
        str(bundle),
        "--data-dir",
        str(tmp_path / "data"),
        "--train",
        "2",
        "--val",
        "1",
        "--test",
        "1",
        "--max-epochs",
        "1",
        "--val-interval",
        "1",
        "--fov-scale",
        "0.4",
        "--samples-per-case",
        "1",
        "--device",
        "cpu",
    ]
    two_stages = script != "train_mri_tumor.py"  # the MRI recipe's stage 2 is an experiment: --stage finetune only
    if two_stages:
        command += ["--finetune-epochs", "1", "--finetune-val-interval", "1"]
    if script == "train_ct_unet.py":  # stage 2 on one synthesised sample of each kind (of realistic size)
        command += ["--finetune-samples", "1"]
    examples = {p: p.read_bytes() for p in (REPO / "data_manifests").glob("*.json")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (bundle / "models" / "model.pt").is_file()
    if two_stages:
        assert "stage 1: best validation mean Dice" in done.stdout
        assert "stage 2: best validation mean Dice" in done.stdout
    else:
        assert "train: best validation mean Dice" in done.stdout
    # a recipe with a stage 2 keeps stage 1's weights for a later --stage finetune
    assert (tmp_path / "data" / "stage1_model.pt").is_file()
    metrics = json.loads((tmp_path / "data" / "eval" / "metrics.json").read_text())
    assert metrics
    # data elsewhere leaves the example manifests in data_manifests/ as they were
    assert {p: p.read_bytes() for p in (REPO / "data_manifests").glob("*.json")} == examples
    if script == "train_mri_tumor.py":
        bad = subprocess.run(
            [*command[:2], "--bundle", str(bundle), "--channels", "4", "--stage", "data"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 2 and "set num_channels to 4 in configs/inference.json" in bad.stderr
