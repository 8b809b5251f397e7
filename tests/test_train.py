"""Training and evaluation go through the bundle's real train.json / evaluate.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.bundles.bundle import config_parser, load_bundle
from pipelines.cli.main import main
from pipelines.data.manifests.model import ManifestError, write_manifest
from pipelines.data.phantoms.make import make_ct_phantom
from pipelines.data.phantoms.write import write_nifti
from pipelines.train import TrainOptions, evaluate, latest_checkpoint, train, training_precision
from tests.helpers import BUNDLES, REPO, trust_test_bundle

LABELS = {"0": "background", "1": "spleen", "2": "kidney_right", "3": "kidney_left", "4": "liver", "5": "liver_tumor"}
IDS = {name: int(k) for k, name in LABELS.items() if k != "0"}
FAST = {"samples_per_case": 1, "cache_workers": 1}


def tiny_dataset(folder: Path, splits=("training",) * 3 + ("validation",) * 2 + ("test",)) -> Path:
    """Small CT phantoms (48x40x32 voxels at 6 mm) and their manifest."""
    manifest: dict = {"name": "tiny", "modality": "CT", "labels": LABELS, "training": [], "validation": [], "test": []}
    for i, split in enumerate(splits):
        phantom = make_ct_phantom(100 + i, shape=(48, 40, 32), spacing_mm=(6.0, 6.0, 6.0), label_ids=IDS)
        write_nifti(phantom, folder / f"case{i}")
        manifest[split].append(
            {"case_id": f"case{i}", "image": f"case{i}/image.nii.gz", "label": f"case{i}/label.nii.gz"}
        )
    return write_manifest(manifest, folder / "tiny.json")


@pytest.fixture()
def bundle_copy(tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "ct_abdomen_unet"
    shutil.copytree(BUNDLES / "ct_abdomen_unet", target, ignore=shutil.ignore_patterns("*.pt", "eval"))
    return trust_test_bundle(target)  # outside bundles/: the command line opens only trusted bundles


@pytest.mark.slow
def test_tiny_training_writes_a_checkpoint_and_resumes(tmp_path: Path, bundle_copy: Path) -> None:
    manifest = tiny_dataset(tmp_path / "data")
    first = train(bundle_copy, manifest, TrainOptions(max_epochs=1, val_interval=1, device="cpu", overrides=FAST))
    assert first.epochs == 1 and first.best_epoch == 1
    weights = bundle_copy / "models" / "model.pt"
    assert weights.is_file()
    state = torch.load(weights, weights_only=True)
    assert "model.0.conv.unit0.conv.weight" in state  # a plain state_dict, as the Model Zoo ships
    last = latest_checkpoint(load_bundle(bundle_copy))
    assert last is not None and last.name == "last_checkpoint_epoch=1.pt"

    resumed = train(
        bundle_copy, manifest, TrainOptions(max_epochs=2, val_interval=1, resume=True, device="cpu", overrides=FAST)
    )
    assert resumed.epochs == 2, "resume continues from epoch 1 instead of starting over"
    assert latest_checkpoint(load_bundle(bundle_copy)).name == "last_checkpoint_epoch=2.pt"

    summary = evaluate(bundle_copy, manifest, output=tmp_path / "eval", split="test", device="cpu")
    assert set(summary["cases"]) == {"case5"}
    assert set(summary["mean"]) == {"spleen", "kidney_right", "kidney_left", "liver", "liver_tumor"}
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "case5" in written["cases"]
    assert (tmp_path / "eval" / "metrics.csv").read_text().startswith("case_id,structure,dice,hd95_mm,asd_mm")


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path, bundle_copy: Path) -> None:
    manifest = tiny_dataset(tmp_path / "data", splits=("training", "validation"))
    with pytest.raises(FileNotFoundError, match=r"--resume found no checkpoint"):
        train(bundle_copy, manifest, TrainOptions(resume=True))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"name": "x", "labels": {"0": "background"}, "training": []}), "modality"),
        (
            json.dumps(
                {
                    "name": "x",
                    "modality": "CT",
                    "labels": LABELS,
                    "training": [{"image": "nope/image.nii.gz", "label": "nope/label.nii.gz"}],
                    "validation": [{"image": "nope2/image.nii.gz", "label": "nope2/label.nii.gz"}],
                }
            ),
            "nope/image.nii.gz",
        ),
    ],
)
def test_bad_manifest_never_starts_training(
    tmp_path: Path, bundle_copy: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ManifestError):
        train(bundle_copy, path, TrainOptions(max_epochs=1))
    code = main(["train", "--bundle", str(bundle_copy), "--manifest", str(path)])
    assert code == 1
    assert message in capsys.readouterr().err
    assert not list((bundle_copy / "models").glob("*.pt")), "training must not start on a bad manifest"


@pytest.mark.slow
def test_two_process_torchrun_training_on_cpu(tmp_path: Path, bundle_copy: Path) -> None:
    """multi_gpu_train.json layered by `medseg train` under torchrun: DDP with gloo, one checkpoint."""
    manifest = tiny_dataset(tmp_path / "data", splits=("training",) * 4 + ("validation",) * 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "pipelines",
        "train",
        "--bundle",
        str(bundle_copy),
        "--manifest",
        str(manifest),
        "--max-epochs",
        "1",
        "--val-interval",
        "1",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (bundle_copy / "models").glob("*.pt")) == ["last_checkpoint_epoch=1.pt", "model.pt"]
    state = torch.load(bundle_copy / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state), "the DDP wrapper must not leak into saved weights"


@pytest.mark.slow
def test_distributed_training_releases_its_process_group_before_returning(
    tmp_path: Path, bundle_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distributed run drops its DistributedDataParallel network (which holds the process group and
    its C++ worker threads) before train() returns. Left to interpreter shutdown, the gloo group's
    clean-up aborted a rank with SIGABRT now and then, after a successful run. One gloo process here;
    the garbage collector is off so that only train() itself can have released the network."""
    import gc

    from tests.label_app.servers import free_port

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    manifest = tiny_dataset(tmp_path / "data", splits=("training",) * 2 + ("validation",))
    gc.collect()
    gc.disable()
    try:
        result = train(
            bundle_copy,
            manifest,
            TrainOptions(max_epochs=1, val_interval=1, device="cpu", distributed=True, overrides=FAST),
        )
        alive = [o for o in gc.get_objects() if isinstance(o, torch.nn.parallel.DistributedDataParallel)]
    finally:
        gc.enable()
        import ignite.distributed as idist

        idist.sync()  # ignite keeps the native model it detected: back to serial for the tests that follow
    assert result.epochs == 1 and (bundle_copy / "models" / "model.pt").is_file()
    assert not torch.distributed.is_initialized(), "the recipe's finalize destroys the process group"
    assert not alive, "the DDP network (and its process group) outlived train()"


def test_weights_are_stored_in_the_dtype_the_metadata_names(tmp_path: Path) -> None:
    """A half-precision model.pt halves the file and loads into the float32 network unchanged
    (to fp16 rounding); integer buffers keep their type; an unknown dtype is refused."""
    import shutil

    from pipelines.train import WEIGHTS_DTYPE_KEY, store_weights

    target = tmp_path / "bundle"
    shutil.copytree(BUNDLES / "ct_abdomen_unet", target, ignore=shutil.ignore_patterns("*.pt", "eval"))
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.BatchNorm3d(4))
    (target / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), target / "models" / "model.pt")
    size32 = (target / "models" / "model.pt").stat().st_size

    meta_path = target / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    store_weights(load_bundle(target))  # no key: float32, untouched
    assert (target / "models" / "model.pt").stat().st_size == size32

    meta[WEIGHTS_DTYPE_KEY] = "float16"
    meta_path.write_text(json.dumps(meta))
    store_weights(load_bundle(target))
    stored = torch.load(target / "models" / "model.pt", weights_only=True)
    assert stored["0.weight"].dtype == torch.float16
    assert stored["1.num_batches_tracked"].dtype == torch.int64
    fresh = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.BatchNorm3d(4))
    fresh.load_state_dict(stored)
    assert fresh[0].weight.dtype == torch.float32
    torch.testing.assert_close(fresh[0].weight, network[0].weight, atol=1e-3, rtol=1e-3)

    meta[WEIGHTS_DTYPE_KEY] = "int8"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="medseg_weights_dtype 'int8'"):
        store_weights(load_bundle(target))
    with pytest.raises(ValueError, match="medseg_weights_dtype 'int8'"):  # before any training starts
        train(target, tmp_path / "no_manifest_needed_to_refuse.json")


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"), [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")]
)
def test_training_precision_is_bf16_only_on_cpus_with_bf16_instructions(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, expected: str
) -> None:
    """Emulated bf16 trains slower than float32; each bundle's train.json takes its precision from this policy."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert training_precision(torch.device("cpu")) == expected
    assert training_precision("cuda") == "fp32"  # the CUDA trainers' amp does mixed precision
    for name in ("ct_abdomen_unet", "ct_multiorgan_unetr", "mri_brain_tumor"):
        parser = config_parser(
            BUNDLES / name, [BUNDLES / name / "configs" / "train.json"], overrides={"device": "$torch.device('cpu')"}
        )
        parser.get_parsed_content("imports")  # as ConfigWorkflow does first
        assert parser.get_parsed_content("precision") == expected, name
