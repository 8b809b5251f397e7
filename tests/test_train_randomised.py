"""The fine-tuning stages of the weights recipes: e.g. `configs/train_randomised.json` over `train.json`.

The layer swaps the manifest's training cases for synthesised, domain-randomised phantoms
(:class:`~pipelines.data.synthetic.SyntheticPhantomDataset`), validates on synthesised phantoms of
the validation seed range, and starts from ``init_weights``. These tests run it for real on small
grids (the shipped layer draws realistic acquisitions, seconds per sample).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from pipelines.data.datasets import make_brain_dataset
from pipelines.train import TrainOptions, train
from tests.helpers import BUNDLES, REPO, trust_test_bundle
from tests.test_train import tiny_dataset

LAYER = "train_randomised"


def small_grids(datasets: int, shape: list[int], spacing: list[float]) -> dict[str, object]:
    """Overrides that give every synthetic dataset of the layer a small fixed grid and one sample each."""
    overrides: dict[str, object] = {"randomised_samples": 1, "classic_samples": 1, "validation_samples": 1}
    for index in range(datasets):
        overrides[f"train#dataset#datasets#{index}#shape"] = shape
        overrides[f"train#dataset#datasets#{index}#spacing_mm"] = spacing
    overrides["validate#dataset#data#shape"] = shape
    overrides["validate#dataset#data#spacing_mm"] = spacing
    return overrides


def tiny_brain_dataset(folder: Path) -> Path:
    """One training and one validation head phantom at a quarter of the field of view, and their manifest."""
    return make_brain_dataset(
        folder, BUNDLES / "mri_brain_tumor", counts={"training": 1, "validation": 1}, fov_scale=0.25
    )


CASES = {
    "ct_abdomen_unet": (tiny_dataset, [48, 48, 32], [8.0, 8.0, 8.0], {"cache_workers": 1}),
    "mri_brain_tumor": (
        tiny_brain_dataset,
        [48, 48, 24],
        [5.0, 5.0, 8.0],
        {"cache_workers": 1, "patch_size": [32, 32, 16]},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_randomised_layer_starts_from_init_weights_and_trains(tmp_path: Path, name: str) -> None:
    """With a zero learning rate the saved weights are the initial ones (the layer loads them);
    with a real one training moves them; both runs use only synthesised phantoms for training."""
    make_manifest, shape, spacing, fast = CASES[name]
    bundle = tmp_path / name
    shutil.copytree(BUNDLES / name, bundle, ignore=shutil.ignore_patterns("*.pt", "eval"))
    trust_test_bundle(bundle)
    manifest = make_manifest(tmp_path / "data")
    init = tmp_path / "init.pt"
    shutil.copyfile(BUNDLES / name / "models" / "model.pt", init)
    initial = torch.load(init, weights_only=True)
    overrides = {**fast, **small_grids(2, shape, spacing), "samples_per_case": 1, "init_weights": str(init)}

    frozen = train(
        bundle,
        manifest,
        TrainOptions(
            max_epochs=1, val_interval=1, device="cpu", layers=(LAYER,), overrides={**overrides, "learning_rate": 0.0}
        ),
    )
    assert frozen.epochs == 1 and frozen.weights.is_file()
    saved = torch.load(frozen.weights, weights_only=True)
    weights = [k for k, v in initial.items() if v.is_floating_point() and "running" not in k and v.dim() > 1]
    assert weights and all(torch.equal(saved[k], initial[k]) for k in weights), "init_weights were not loaded"

    for path in (bundle / "models").glob("*.pt"):
        path.unlink()
    moved = train(
        bundle,
        manifest,
        TrainOptions(
            max_epochs=1, val_interval=1, device="cpu", layers=(LAYER,), overrides={**overrides, "learning_rate": 1e-3}
        ),
    )
    changed = torch.load(moved.weights, weights_only=True)
    assert any(not torch.equal(changed[k], initial[k]) for k in weights), "training did not change the weights"


@pytest.mark.parametrize(
    ("layer", "error", "message"),
    [("../../etc/passwd", ValueError, "not a path"), ("train_nowhere", FileNotFoundError, "train_nowhere")],
)
def test_a_bad_layer_is_refused_before_training(tmp_path: Path, layer: str, error: type, message: str) -> None:
    bundle = tmp_path / "ct_abdomen_unet"
    shutil.copytree(BUNDLES / "ct_abdomen_unet", bundle, ignore=shutil.ignore_patterns("*.pt", "eval"))
    manifest = tiny_dataset(tmp_path / "data", splits=("training", "validation"))
    with pytest.raises(error, match=message):
        train(trust_test_bundle(bundle), manifest, TrainOptions(max_epochs=1, layers=(layer,)))
    assert not list((bundle / "models").glob("*.pt"))


def test_a_layer_with_distributed_training_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "ct_abdomen_unet"
    shutil.copytree(BUNDLES / "ct_abdomen_unet", bundle, ignore=shutil.ignore_patterns("*.pt", "eval"))
    manifest = tiny_dataset(tmp_path / "data", splits=("training", "validation"))
    with pytest.raises(ValueError, match="cannot be combined with distributed training"):
        train(trust_test_bundle(bundle), manifest, TrainOptions(max_epochs=1, distributed=True, layers=(LAYER,)))
    assert not list((bundle / "models").glob("*.pt"))


@pytest.mark.parametrize("script", ["train_ct_unet.py", "train_mri_tumor.py", "train_unetr.py"])
def test_recipe_finetune_without_stage1_weights_stops_before_any_data(
    tmp_path: Path, script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import runpy

    data = tmp_path / "data"
    monkeypatch.setattr(sys, "argv", [script, "--data-dir", str(data), "--stage", "finetune"])
    with pytest.raises(SystemExit, match=r"stage1_model\.pt: no stage-1 weights"):
        runpy.run_path(str(REPO / "scripts" / script), run_name="__main__")
    assert not data.exists(), "no phantoms may be generated before the check"

    monkeypatch.setattr(sys, "argv", [script, "--data-dir", str(data), "--init-weights", str(tmp_path / "w.pt")])
    with pytest.raises(SystemExit, match="only with --stage finetune"):
        runpy.run_path(str(REPO / "scripts" / script), run_name="__main__")
    assert not data.exists()


@pytest.mark.parametrize(("phantoms", "ids"), [("varied_heads", {""}), ("mixed_heads", {"classic_", "varied_"})])
def test_mri_recipe_draws_other_heads_in_a_folder_of_their_own(
    phantoms: str, ids: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cases on disk are known by their geometry only: --phantoms puts the other kind in <data-dir>/<name>, never
    among the default heads (the same convention as a fine-tuning stage's phantoms). The mixed heads hold both
    kinds of each seed in every split."""
    import runpy

    data = tmp_path / "data"
    argv = ["train_mri_tumor.py", "--stage", "data", "--phantoms", phantoms, "--data-dir", str(data)]
    argv += ["--train", "1", "--val", "1", "--test", "1", "--fov-scale", "0.3"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(REPO / "scripts" / "train_mri_tumor.py"), run_name="__main__")
    assert stop.value.code == 0
    assert sorted(p.name for p in data.iterdir()) == [phantoms]
    manifests = list((data / phantoms).glob("*.json"))
    assert len(manifests) == 1
    written = json.loads(manifests[0].read_text())
    for split in ("training", "validation", "test"):
        cases = written[split]
        assert {case["case_id"].removesuffix(case["case_id"][-11:]) for case in cases} == ids, split
        for case in cases:
            image = (manifests[0].parent / case["image"]).resolve()
            assert image.is_file() and image.is_relative_to((data / phantoms).resolve())


def _recorded_chain(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    third_in_all: bool = True,
    third_phantoms: str | None = None,
    calls: list | None = None,
    phantoms: tuple[str, ...] = (),
) -> tuple[list, Path]:
    """Run a three-stage recipe's command line with training replaced by a recorder; return what it trained.
    ``calls`` (if given) receives (stage, manifest, eval_dir) of every training and evaluation run."""
    from types import SimpleNamespace

    import pipelines.train
    from pipelines.cli.recipe import FineTune, recipe_parser, run_recipe_from_args

    third = FineTune(
        layers=("train_randomised", "train_more"),
        max_epochs=4,
        val_interval=2,
        learning_rate=3e-4,
        in_all=third_in_all,
        phantoms=third_phantoms,
    )
    finetune = FineTune(layers=("train_randomised",), max_epochs=8, val_interval=2, learning_rate=5e-4, then=third)
    data = tmp_path / "data"
    parser = recipe_parser(
        "three stages", bundle=tmp_path / "bundle", data_dir=data, counts={"training": 1, "validation": 1, "test": 1},
        finetune=finetune, phantoms=phantoms,
    )  # fmt: skip
    trained: list = []

    def fake_run_recipe(bundle, manifest, *, stage, options=None, eval_dir, device="auto"):
        if calls is not None:
            calls.append((stage, Path(manifest), Path(eval_dir)))
        if stage == "evaluate":
            return {"evaluation": {"mean": {}}}
        weights = tmp_path / "bundle_model.pt"
        source = options.overrides.get("init_weights")
        # each stage's weights hold the path chain they came from, so the test can follow it
        weights.write_text(f"{Path(source).read_text() if source else ''}>{'+'.join(options.layers) or 'train'}")
        trained.append(options)
        result = SimpleNamespace(best_metric=0.5, best_epoch=1, weights=weights)
        return {"train": result, "train_minutes": 0.0}

    monkeypatch.setattr(pipelines.train, "run_recipe", fake_run_recipe)

    def make_data(counts: dict[str, int], phantoms: str | None = None) -> Path:
        folder = data if phantoms is None else data / phantoms
        folder.mkdir(parents=True, exist_ok=True)
        return folder / "manifest.json"

    run_recipe_from_args(
        parser.parse_args(argv), make_data, example_manifest=tmp_path / "x.json", default_data_dir=tmp_path / "other",
        finetune=finetune,
    )  # fmt: skip
    return trained, data


def test_recipe_runs_every_fine_tuning_stage_from_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained, data = _recorded_chain(tmp_path, monkeypatch, ["--stage", "all"])
    assert [o.layers for o in trained] == [(), ("train_randomised",), ("train_randomised", "train_more")]
    assert [o.max_epochs for o in trained[1:]] == [8, 4]
    assert [o.overrides["learning_rate"] for o in trained[1:]] == [5e-4, 3e-4]
    assert trained[1].overrides["init_weights"] == str((data / "stage1_model.pt").resolve())
    assert trained[2].overrides["init_weights"] == str((data / "stage2_model.pt").resolve())
    # stage 3 started from stage 2's weights, which started from stage 1's
    assert (data / "stage2_model.pt").read_text() == ">train>train_randomised"
    assert (tmp_path / "bundle_model.pt").read_text() == ">train>train_randomised>train_randomised+train_more"


def test_recipe_from_stage_three_starts_from_the_given_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = tmp_path / "given.pt"
    given.write_text("given")
    argv = ["--stage", "finetune", "--from-stage", "3", "--init-weights", str(given), "--finetune-epochs", "1"]
    trained, data = _recorded_chain(tmp_path, monkeypatch, argv)
    assert [o.layers for o in trained] == [("train_randomised", "train_more")]
    assert trained[0].max_epochs == 1  # --finetune-epochs applies to every stage run
    assert trained[0].overrides["learning_rate"] == 3e-4  # the stage's own
    assert (tmp_path / "bundle_model.pt").read_text() == "given>train_randomised+train_more"
    assert (data / "stage2_model.pt").read_text() == "given"  # kept where a later --from-stage 3 finds it


def test_an_experimental_stage_runs_only_when_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained, _ = _recorded_chain(tmp_path / "all", monkeypatch, ["--stage", "all"], third_in_all=False)
    assert [o.layers for o in trained] == [(), ("train_randomised",)]  # the shipped stages only
    (tmp_path / "stage2").mkdir()
    stage1 = tmp_path / "stage2" / "data" / "stage1_model.pt"
    stage1.parent.mkdir()
    stage1.write_text("s1")
    trained, _ = _recorded_chain(tmp_path / "stage2", monkeypatch, ["--stage", "finetune"], third_in_all=False)
    assert [o.layers for o in trained] == [("train_randomised",)]
    given = tmp_path / "given.pt"
    given.write_text("given")
    argv = ["--stage", "finetune", "--from-stage", "3", "--init-weights", str(given)]
    trained, _ = _recorded_chain(tmp_path / "stage3", monkeypatch, argv, third_in_all=False)
    assert [o.layers for o in trained] == [("train_randomised", "train_more")]


def test_a_stage_with_phantoms_of_its_own_trains_on_them_and_both_kinds_are_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list = []
    _recorded_chain(tmp_path / "all", monkeypatch, ["--stage", "all"], third_phantoms="fat", calls=calls)
    data = tmp_path / "all" / "data"
    base, fat = data / "manifest.json", data / "fat" / "manifest.json"
    assert [(stage, manifest) for stage, manifest, _ in calls] == [
        ("train", base), ("train", base), ("train", fat), ("evaluate", base), ("evaluate", fat)
    ]  # fmt: skip
    assert calls[3][2] == data / "eval" and calls[4][2] == data / "eval" / "fat"  # each kind scored apart

    calls.clear()  # an experiment's phantoms are drawn only where it runs, and are not scored by --stage all
    _recorded_chain(
        tmp_path / "exp", monkeypatch, ["--stage", "all"], third_in_all=False, third_phantoms="fat", calls=calls
    )
    assert not (tmp_path / "exp" / "data" / "fat").exists()
    assert [stage for stage, _, _ in calls] == ["train", "train", "evaluate"]
    given = tmp_path / "given.pt"
    given.write_text("given")
    calls.clear()
    argv = ["--stage", "finetune", "--from-stage", "3", "--init-weights", str(given)]
    _recorded_chain(tmp_path / "s3", monkeypatch, argv, third_in_all=False, third_phantoms="fat", calls=calls)
    assert calls == [("train", tmp_path / "s3" / "data" / "fat" / "manifest.json", tmp_path / "s3" / "data" / "eval")]


def test_a_run_on_phantoms_of_another_kind_keeps_everything_in_their_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--phantoms NAME: stage 1 trains on them, and its weights, the later stages' and the evaluation stay in
    <data-dir>/NAME, so a default run's stage weights in <data-dir> are neither used nor overwritten."""
    calls: list = []
    trained, data = _recorded_chain(
        tmp_path, monkeypatch, ["--stage", "all", "--phantoms", "other"], calls=calls, phantoms=("other",)
    )
    other = data / "other"
    assert [(stage, manifest, folder) for stage, manifest, folder in calls] == [
        ("train", other / "manifest.json", other / "eval"),
        ("train", other / "manifest.json", other / "eval"),
        ("train", other / "manifest.json", other / "eval"),
        ("evaluate", other / "manifest.json", other / "eval"),
    ]
    assert trained[1].overrides["init_weights"] == str((other / "stage1_model.pt").resolve())
    assert sorted(p.name for p in data.iterdir()) == ["other"]
    with pytest.raises(SystemExit):  # only the names the script draws
        _recorded_chain(tmp_path / "bad", monkeypatch, ["--phantoms", "nope"], phantoms=("other",))


def test_recipe_from_stage_three_without_stage_two_weights_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit, match=r"stage2_model\.pt: no stage-2 weights to fine-tune from"):
        _recorded_chain(tmp_path, monkeypatch, ["--stage", "finetune", "--from-stage", "3"])
    assert not (tmp_path / "data").exists()
    with pytest.raises(SystemExit, match="--from-stage 3: only with --stage finetune"):
        _recorded_chain(tmp_path, monkeypatch, ["--from-stage", "3"])


def test_ct_perirenal_layer_draws_bodies_with_perirenal_fat_and_a_calibration_offset() -> None:
    """Stage 3 of the CT recipe: train_perirenal.json over train_randomised.json changes the body anatomy of
    training and validation, and adds a scanner calibration offset to the training samples (not to validation)."""
    from pipelines.bundles.bundle import config_parser
    from pipelines.data.appearance import appearance_settings

    root = BUNDLES / "ct_abdomen_unet"
    configs = [root / "configs" / f"{name}.json" for name in ("train", "train_randomised", "train_perirenal")]
    stage3 = config_parser(root, configs)
    stage2 = config_parser(root, configs[:2])
    body, classic = stage3["train#dataset#datasets"]
    assert body["phantom_options"] == {"anatomy": "body", "perirenal_fat": True}
    assert "phantom_options" not in classic  # the classic anatomy has no perirenal space to draw
    for dataset in (body, classic):
        settings = appearance_settings("CT", dataset["appearance"])
        assert settings.offset_prob == 0.8 and settings.offset_hu == (-25.0, 25.0)
    assert "appearance" not in stage3["validate#dataset#data"]  # chosen on the abdomens as drawn
    assert stage3["validate#dataset#data#phantom_options"] == {
        "anatomy": "body",
        "region": "abdomen",
        "perirenal_fat": True,
    }
    # everything else is stage 2's: the same seeds, samples, phases and schedule
    for part in (stage3, stage2):
        part["train#dataset#datasets#0#phantom_options"] = None
        part["validate#dataset#data#phantom_options"] = None
        for index in (0, 1):
            part[f"train#dataset#datasets#{index}#appearance"] = None
    assert stage3.config == stage2.config
