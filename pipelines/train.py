"""Training and evaluation through a bundle's own ``train.json`` / ``evaluate.json``.

The bundle holds the whole recipe (network, loss, sampling, augmentation, validation, checkpoints)
and MONAI's :class:`~monai.bundle.ConfigWorkflow` runs it with ignite. This module only points the
recipe at a validated data manifest and decides run-level things: epochs, device, seed, resuming,
and layering ``multi_gpu_train.json`` when started by ``torchrun``.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigWorkflow
from monai.handlers import CheckpointLoader

from pipelines.bundles.bundle import Bundle, load_bundle
from pipelines.data.manifests.model import ManifestError, load_manifest
from pipelines.data.manifests.validate import validate_manifest

logger = logging.getLogger(__name__)

__all__ = [
    "TrainOptions",
    "TrainResult",
    "datalist",
    "latest_checkpoint",
    "run_recipe",
    "store_weights",
    "train",
    "training_precision",
]

WEIGHTS_DTYPE_KEY = "medseg_weights_dtype"
"""metadata.json key: the floating-point type ``models/model.pt`` is stored in after training
(``float32``, the default, ``float16`` or ``bfloat16``). Loading needs nothing special:
``load_state_dict`` copies each tensor into the network's own (float32) parameters."""

_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

_LAST = re.compile(r"last_checkpoint_(?:epoch=)?(\d+)\.pt$")
_LAYER_NAME = re.compile(r"[A-Za-z0-9_]+")


def training_precision(device: torch.device | str) -> str:
    """The compute precision of our bundles' training on ``device``: bf16 on a CPU with bf16 instructions,
    fp32 on any other CPU and on CUDA (where the trainers' ``amp`` does mixed precision).

    Without bf16 instructions PyTorch emulates bf16, and training is slower than in float32: one
    step of the CT U-Net (4 patches of 96^3, AdamW) took 12.5 s in bf16 against 6.9 s in fp32 on a
    2-core Intel Xeon without AVX-512 BF16 or AMX (``scripts/bench/train_precision.py``, medians of 3).
    Where the instructions exist the recipes keep bf16, the precision the shipped weights were trained in.
    """
    from pipelines.inference import cpu_has_native_bf16

    if torch.device(device).type != "cpu":
        return "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def datalist(manifest: str | Path, split: str, *, allow_outside_paths: bool = False) -> list[dict[str, Any]]:
    """A manifest split as a MONAI datalist; what bundle configs call to get their data.

    Args:
        manifest: the manifest file (paths in it are relative to its folder).
        split: ``training``, ``validation``, ``test`` or ``all``.
        allow_outside_paths: accept paths that leave the manifest's folder (the config's
            ``allow_outside_paths``, set by ``--allow-outside-paths``).
    """
    return load_manifest(manifest, allow_outside_paths=allow_outside_paths).datalist(split)


@dataclass(frozen=True)
class TrainOptions:
    """Run-level choices for :func:`train`.

    Attributes:
        max_epochs: overrides the bundle's ``max_epochs`` when set.
        val_interval: overrides ``val_interval`` (epochs between validations) when set.
        resume: continue from the newest ``models/last_checkpoint_<epoch>.pt``.
        device: ``auto`` lets the bundle decide; else a torch device string.
        seed: overrides the bundle's ``seed`` when set.
        distributed: layer ``configs/multi_gpu_train.json`` (one process per device, under torchrun).
        world_size: number of processes of a distributed run (each needs a validation case).
        overrides: further MONAI config overrides, ``{"id#sub": value}``.
        layers: names of further configs in the bundle's ``configs/`` laid over ``train.json`` (after
            ``multi_gpu_train`` when distributed), e.g. ``("train_randomised",)``: training on
            synthesised, domain-randomised phantoms instead of the manifest's training cases.
        allow_outside_paths: accept manifest paths that leave the manifest's folder.
    """

    max_epochs: int | None = None
    val_interval: int | None = None
    resume: bool = False
    device: str = "auto"
    seed: int | None = None
    distributed: bool = False
    world_size: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    layers: tuple[str, ...] = ()
    allow_outside_paths: bool = False


@dataclass
class TrainResult:
    """The outcome of a training run."""

    best_metric: float
    best_epoch: int
    epochs: int
    weights: Path
    last_checkpoint: Path | None


def _rank(options: TrainOptions) -> int:
    """This process's rank in a distributed run (torchrun's ``RANK``), 0 otherwise."""
    return int(os.environ.get("RANK", "0")) if options.distributed else 0


def latest_checkpoint(bundle: Bundle) -> Path | None:
    """The newest resumable checkpoint in ``models/`` (written every epoch by train.json), or None."""
    found = [
        (int(m.group(1)), p)
        for p in (bundle.root / "models").glob("last_checkpoint_*.pt")
        if (m := _LAST.search(p.name))
    ]
    return max(found)[1] if found else None


def _check_manifest(manifest: Path, world_size: int = 1, *, allow_outside_paths: bool = False) -> None:
    problems = validate_manifest(manifest, allow_outside_paths=allow_outside_paths)
    if problems:
        raise ManifestError(problems)
    loaded = load_manifest(manifest, allow_outside_paths=allow_outside_paths)
    if not loaded.split("training"):
        raise ValueError(f"{manifest}: no training cases (the 'training' list is empty)")
    if not loaded.split("validation"):
        raise ValueError(f"{manifest}: no validation cases; add a 'validation' list or run `medseg manifest split`")
    if len(loaded.split("validation")) < world_size:
        raise ValueError(
            f"{manifest}: {len(loaded.split('validation'))} validation case(s) for {world_size} processes; "
            "a distributed run needs at least one validation case per process"
        )


def train(bundle_dir: str | Path, manifest: str | Path, options: TrainOptions | None = None) -> TrainResult:
    """Train a bundle on a manifest's ``training`` cases, validating on its ``validation`` cases.

    The best checkpoint by validation mean Dice is saved as the bundle's ``models/model.pt``.

    Raises:
        ManifestError: the manifest has problems (all are listed); training does not start.
        FileNotFoundError: no ``configs/train.json``, a missing layer config, or ``resume`` without a checkpoint.
        ValueError: an unknown ``medseg_weights_dtype`` in the metadata; a layer name that is a path, or layers
            with ``distributed``.
    """
    options = options or TrainOptions()
    bundle = load_bundle(bundle_dir)
    _storage_dtype(bundle)  # a bad medseg_weights_dtype is refused before training, not after it
    manifest = Path(manifest).resolve()
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: manifest does not exist")
    _check_manifest(
        manifest, options.world_size if options.distributed else 1, allow_outside_paths=options.allow_outside_paths
    )
    train_config = bundle.config_path("train")
    if not train_config.is_file():
        raise FileNotFoundError(f"{train_config}: bundle {bundle.name} has no training config")
    configs = [str(train_config)]
    if options.distributed:
        multi = bundle.config_path("multi_gpu_train")
        if not multi.is_file():
            raise FileNotFoundError(f"{multi}: bundle {bundle.name} has no multi-GPU training config")
        configs.append(str(multi))
    if options.distributed and options.layers:
        # both replace the `initialize` list: the layer's would drop the process group set-up
        raise ValueError(
            f"config layers {list(options.layers)} cannot be combined with distributed training yet: "
            "each replaces train.json's 'initialize' list; train on one process"
        )
    for name in options.layers:
        if not _LAYER_NAME.fullmatch(name):
            raise ValueError(f"config layer {name!r}: expected a config name such as 'train_randomised', not a path")
        layer = bundle.config_path(name)
        if not layer.is_file():
            raise FileNotFoundError(f"{layer}: bundle {bundle.name} has no config {name!r} to lay over train.json")
        configs.append(str(layer))
    resume_from = None
    if options.resume:
        resume_from = latest_checkpoint(bundle)
        if resume_from is None:
            raise FileNotFoundError(
                f"{bundle.root / 'models'}: --resume found no checkpoint "
                "(expected last_checkpoint_epoch=<N>.pt from an "
                "earlier run); start without --resume"
            )
        logger.info("resuming from %s", resume_from)

    overrides: dict[str, Any] = {
        "bundle_root": str(bundle.root),
        "manifest": str(manifest),
        "allow_outside_paths": options.allow_outside_paths,
    }
    if options.device != "auto":
        overrides["device"] = f"$torch.device('{torch.device(options.device)}')"
    if options.max_epochs is not None:
        overrides["max_epochs"] = int(options.max_epochs)
    if options.val_interval is not None:
        overrides["val_interval"] = int(options.val_interval)
    if options.seed is not None:
        overrides["seed"] = int(options.seed)
    overrides.update(options.overrides)

    logging_file = bundle.root / "configs" / "logging.conf"
    workflow = ConfigWorkflow(
        config_file=configs if len(configs) > 1 else configs[0],
        meta_file=str(bundle.root / "configs" / "metadata.json"),
        logging_file=str(logging_file) if logging_file.is_file() else None,
        workflow_type="train",
        **overrides,
    )
    result = _run_workflow(workflow, bundle, resume_from)
    if options.distributed:
        # The network's DistributedDataParallel wrapper keeps the gloo/NCCL process group, and its C++
        # worker threads, alive after the recipe's destroy_process_group. Left to interpreter shutdown,
        # their clean-up needs a GIL that is being torn down and the process aborts (SIGABRT) now and
        # then after a successful run. Dropping the recipe's objects here joins them while Python is whole.
        del workflow
        gc.collect()
    if bundle.weights.is_file() and _rank(options) == 0:
        store_weights(bundle)  # one writer: the other processes only trained beside it
    logger.info(
        "best validation mean Dice %.4f at epoch %d; weights in %s",
        result.best_metric,
        result.best_epoch,
        result.weights,
    )
    return result


def _run_workflow(workflow: ConfigWorkflow, bundle: Bundle, resume_from: Path | None) -> TrainResult:
    """Initialise, run and finalise a training workflow; what it ran keeps no reference here."""
    workflow.initialize()
    try:
        if resume_from is not None:
            # The trainer cannot list a loader that refers back to itself in its own handlers
            # (a circular reference for the config parser), so it is attached here.
            parsed = workflow.parser.get_parsed_content
            CheckpointLoader(
                load_path=str(resume_from),
                load_dict={
                    "model": parsed("network"),
                    "optimizer": parsed("optimizer"),
                    "lr_scheduler": parsed("lr_scheduler"),
                    "trainer": parsed("train#trainer"),
                },
                map_location=parsed("device"),
            ).attach(parsed("train#trainer"))
        workflow.run()
        evaluator = workflow.parser.get_parsed_content("validate#evaluator")
        trainer = workflow.parser.get_parsed_content("train#trainer")
        best = float(evaluator.state.best_metric) if evaluator.state.best_metric is not None else float("nan")
        return TrainResult(
            best_metric=best,
            best_epoch=int(evaluator.state.best_metric_epoch),
            epochs=int(trainer.state.epoch),
            weights=bundle.weights,
            last_checkpoint=latest_checkpoint(bundle),
        )
    finally:
        workflow.finalize()


def evaluate(
    bundle_dir: str | Path,
    manifest: str | Path,
    *,
    output: str | Path,
    split: str = "test",
    device: str = "auto",
    allow_outside_paths: bool = False,
) -> dict[str, Any]:
    """Run the bundle's ``evaluate.json`` (layered over ``train.json``) on a manifest split.

    The evaluator saves each prediction on its image's own grid; this function then scores them
    against the reference labels with spacing-aware metrics (Dice, HD95 and ASD in mm) and writes
    ``metrics.csv`` and ``metrics.json`` (per case and mean per structure) into ``output``.

    Returns:
        ``{"cases": {case_id: {structure: {metric: value}}}, "mean": {structure: {...}}}``.
    """
    from pipelines.metrics import metrics_for_files, summarize, write_metrics

    bundle = load_bundle(bundle_dir)
    manifest = Path(manifest).resolve()
    loaded = load_manifest(manifest, allow_outside_paths=allow_outside_paths)
    cases = [c for c in loaded.split(split) if c.label is not None]
    if not cases:
        raise ValueError(f"{manifest}: split {split!r} has no cases with labels to evaluate")
    evaluate_config = bundle.config_path("evaluate")
    if not evaluate_config.is_file():
        raise FileNotFoundError(f"{evaluate_config}: bundle {bundle.name} has no evaluation config")
    output = Path(output).resolve()
    predictions = output / "predictions"
    overrides: dict[str, Any] = {
        "bundle_root": str(bundle.root),
        "manifest": str(manifest),
        "allow_outside_paths": allow_outside_paths,
        "eval_split": split,
        "output_dir": str(predictions),
    }
    if device != "auto":
        overrides["device"] = f"$torch.device('{torch.device(device)}')"
    workflow = ConfigWorkflow(
        config_file=[str(bundle.config_path("train")), str(evaluate_config)],
        meta_file=str(bundle.root / "configs" / "metadata.json"),
        logging_file=None,
        workflow_type=None,
        **overrides,
    )
    workflow.initialize()
    try:
        workflow.run()
    finally:
        workflow.finalize()
    names = {k: v for k, v in (bundle.labels or loaded.labels).items() if k != 0}
    per_case: dict[str, Any] = {}
    for case in cases:
        image = case.image_paths[0]
        relative = image.parent.relative_to(manifest.parent) if image.is_relative_to(manifest.parent) else Path()
        stem = image.name.split(".")[0]
        prediction = predictions / relative / f"{stem}_seg.nii.gz"
        if not prediction.is_file():
            raise FileNotFoundError(f"{prediction}: the evaluator wrote no prediction for case {case.case_id}")
        per_case[case.case_id] = metrics_for_files(prediction, case.label, labels=names)
    write_metrics(per_case, output)
    return {"cases": per_case, "mean": summarize(per_case)}


def store_weights(bundle: Bundle) -> Path:
    """Rewrite ``models/model.pt`` in the floating-point type the bundle's metadata asks for.

    A bundle whose weights must stay small in git (``"medseg_weights_dtype": "float16"``) keeps
    a half-precision state dict; integer tensors (counters, BatchNorm's ``num_batches_tracked``)
    are left as they are. float32 (the default) leaves the file untouched.

    Raises:
        ValueError: an unknown dtype in the metadata, or weights that are not a state dict.
    """
    from pipelines.io.writers import write_bytes

    name = _storage_dtype(bundle)
    if name == "float32":
        return bundle.weights
    state = torch.load(bundle.weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{bundle.weights}: expected a state dict of tensors to store as {name}")
    dtype = _STORAGE_DTYPES[name]
    stored = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    written = write_bytes(buffer.getvalue(), bundle.weights)
    logger.info(
        "stored %s as %s (%.1f MB, sha256 %s)", bundle.weights, name, len(buffer.getvalue()) / 1e6, written.sha256
    )
    return bundle.weights


def _storage_dtype(bundle: Bundle) -> str:
    """The metadata's ``medseg_weights_dtype`` (``float32`` when absent), checked."""
    name = str(bundle.metadata.get(WEIGHTS_DTYPE_KEY, "float32"))
    if name not in _STORAGE_DTYPES:
        raise ValueError(
            f"{bundle.root / 'configs' / 'metadata.json'}: {WEIGHTS_DTYPE_KEY} {name!r} is not one of "
            f"{', '.join(_STORAGE_DTYPES)}"
        )
    return name


class BatchNormRecalibration:
    """Re-estimate BatchNorm running statistics from training batches before each validation.

    BatchNorm layers evaluate with running averages of the activation statistics collected while
    the weights were changing. Early in training, with a high learning rate and few patches per
    epoch, those averages lag behind the weights and a network that segments well with batch
    statistics can fail in eval mode. This handler resets the running statistics and re-estimates
    them as a plain average over ``num_batches`` training batches with the current weights (the
    "precise BN" recipe), so validation, and the checkpoint it selects, see statistics that match
    the weights. Networks without BatchNorm are left untouched.

    Args:
        network: the network being trained (a DistributedDataParallel wrapper is fine).
        data_loader: yields training batches as dicts with an ``image`` key.
        num_batches: batches to average over.
        interval: run every ``interval`` epochs (set it to the validation interval).
        precision: ``fp32``, ``bf16`` or ``fp16``, as used for training.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        data_loader: Any,
        num_batches: int = 8,
        interval: int = 1,
        precision: str = "fp32",
    ) -> None:
        if num_batches < 1 or interval < 1:
            raise ValueError(
                f"BatchNormRecalibration: num_batches and interval must be >= 1, got {num_batches}, {interval}"
            )
        self.network = network
        self.data_loader = data_loader
        self.num_batches = num_batches
        self.interval = interval
        self.precision = precision

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Any) -> None:
        from pipelines.inference import autocast

        layers = [m for m in self.network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not layers:
            return
        momenta = [m.momentum for m in layers]
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        was_training = self.network.training
        self.network.train()
        device = next(self.network.parameters()).device
        seen = 0
        with torch.no_grad(), autocast(device, self.precision):
            for batch in self.data_loader:
                self.network(batch["image"].to(device))
                seen += 1
                if seen >= self.num_batches:
                    break
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        self.network.train(was_training)
        logger.info("re-estimated BatchNorm statistics of %d layers over %d batches", len(layers), seen)


def run_recipe(
    bundle_dir: str | Path,
    manifest: str | Path,
    *,
    stage: str = "all",
    options: TrainOptions | None = None,
    eval_dir: str | Path,
    device: str = "auto",
) -> dict[str, Any]:
    """What every weights script does: train (stage ``all``/``train``), then evaluate on ``test``.

    Returns:
        ``{"train": TrainResult | None, "train_minutes": float | None, "evaluation": {...} | None}``.
    """
    import time

    figures: dict[str, Any] = {"train": None, "train_minutes": None, "evaluation": None}
    if stage in ("all", "train"):
        start = time.perf_counter()
        figures["train"] = train(bundle_dir, manifest, options)
        figures["train_minutes"] = (time.perf_counter() - start) / 60
        logger.info(
            "train: best validation mean Dice %.4f at epoch %d (%.1f min)",
            figures["train"].best_metric,
            figures["train"].best_epoch,
            figures["train_minutes"],
        )
    if stage in ("all", "evaluate"):
        figures["evaluation"] = evaluate(bundle_dir, manifest, output=eval_dir, split="test", device=device)
    return figures
