"""The command line the weights scripts (``scripts/train_*.py``) share: generate data, train, evaluate."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.cli.common import setup_logging

__all__ = ["FineTune", "recipe_parser", "run_recipe_from_args"]

FINETUNE_SAMPLE_KEYS = ("randomised_samples", "classic_samples", "validation_samples")
"""The ids of a ``train_randomised`` layer that ``--finetune-samples`` sets."""

STAGE1_WEIGHTS = "stage1_model.pt"
"""Where a two-stage recipe keeps the first stage's weights, in its ``--data-dir``."""


@dataclass(frozen=True)
class FineTune:
    """A recipe's second stage: training continues from the first stage's weights under a config layer.

    Attributes:
        layer: config in the bundle's ``configs/`` laid over ``train.json`` (e.g. ``train_randomised``:
            synthesised, domain-randomised phantoms); it must load ``init_weights`` when set.
        max_epochs, val_interval, learning_rate: the stage's schedule.
        in_all: whether ``--stage all`` runs it (the shipped weights come from both stages); when
            False, only ``--stage finetune`` does (an experiment whose weights are not shipped).
        sample_keys: the layer's ids that ``--finetune-samples`` sets (none: the option is not offered,
            as for a layer that trains on the stage-1 phantoms rather than synthesised samples).
    """

    layer: str
    max_epochs: int
    val_interval: int
    learning_rate: float
    in_all: bool = True
    sample_keys: tuple[str, ...] = FINETUNE_SAMPLE_KEYS


def recipe_parser(
    description: str,
    *,
    bundle: Path,
    data_dir: Path,
    counts: dict[str, int],
    max_epochs: int | None = None,
    val_interval: int | None = None,
    finetune: FineTune | None = None,
) -> argparse.ArgumentParser:
    """The command line every weights script shares; a script adds its own options to it.

    Args:
        description: the script's one-line summary.
        bundle, data_dir: default bundle folder and phantom folder.
        counts: default phantoms per split (``training``, ``validation``, ``test``).
        max_epochs, val_interval: defaults; None keeps the bundle's train.json values.
        finetune: the recipe's second stage, if it has one (adds ``--stage finetune`` and its options).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bundle", type=Path, default=bundle)
    parser.add_argument("--data-dir", type=Path, default=data_dir)
    parser.add_argument("--train", type=int, default=counts["training"], help="training phantoms")
    parser.add_argument("--val", type=int, default=counts["validation"], help="validation phantoms")
    parser.add_argument("--test", type=int, default=counts["test"], help="held-out test phantoms")
    from_bundle = "(default: %(default)s; None: the bundle's train.json value)"
    parser.add_argument("--max-epochs", type=int, default=max_epochs, help=f"epochs {from_bundle}")
    parser.add_argument(
        "--val-interval", type=int, default=val_interval, help=f"epochs between validations {from_bundle}"
    )
    parser.add_argument(
        "--samples-per-case", type=int, default=None, help=f"patches per case and iteration {from_bundle}"
    )
    parser.add_argument(
        "--fov-scale", type=float, default=1.0, help="shrink the phantoms' field of view (0-1] for quick smoke runs"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    stages = (
        ("all", "data", "train", "evaluate") if finetune is None else ("all", "data", "train", "finetune", "evaluate")
    )
    stage_help = None
    if finetune is not None:
        stage_help = (
            f"all: data, train (stage 1, phantoms), finetune (stage 2, configs/{finetune.layer}), evaluate; "
            "train and finetune run one stage each"
            if finetune.in_all
            else f"all: data, train (phantoms), evaluate; finetune: stage 2 alone (configs/{finetune.layer}), "
            "an experiment whose weights are not shipped"
        )
        parser.add_argument(
            "--finetune-epochs", type=int, default=finetune.max_epochs, help="stage 2 epochs (default: %(default)s)"
        )
        parser.add_argument(
            "--finetune-val-interval",
            type=int,
            default=finetune.val_interval,
            help="stage 2 epochs between validations (default: %(default)s)",
        )
        parser.add_argument(
            "--finetune-lr",
            type=float,
            default=finetune.learning_rate,
            help="stage 2 learning rate (default: %(default)s)",
        )
        if finetune.sample_keys:
            parser.add_argument(
                "--finetune-samples",
                type=int,
                default=None,
                help=f"stage 2 synthesised samples per epoch of each kind, and validation samples "
                f"(default: configs/{finetune.layer}.json's; 1 for smoke runs)",
            )
        parser.add_argument(
            "--init-weights",
            type=Path,
            default=None,
            help=f"weights stage 2 starts from (default: <data-dir>/{STAGE1_WEIGHTS}, which stage 1 writes)",
        )
    parser.add_argument("--stage", choices=stages, default="all", help=stage_help)
    return parser


def run_recipe_from_args(
    args: argparse.Namespace,
    make_data: Callable[[dict[str, int]], Path],
    *,
    example_manifest: Path,
    default_data_dir: Path,
    finetune: FineTune | None = None,
) -> int:
    """Generate the data, train and evaluate as a weights script's arguments say; print the figures.

    Args:
        args: parsed from :func:`recipe_parser`.
        make_data: ``make_data(counts) -> manifest``, the script's phantom generator, given the
            cases per split from ``--train/--val/--test``.
        example_manifest: the example manifest in ``data_manifests/`` that documents the dataset; it is
            rewritten to point at the phantoms when they went to ``default_data_dir`` at full field
            of view.
        default_data_dir: the script's default ``--data-dir``.
        finetune: the recipe's second stage (the same as given to :func:`recipe_parser`), if any.
    """
    from pipelines.data.datasets import relocated
    from pipelines.data.manifests.model import write_manifest
    from pipelines.train import TrainOptions, run_recipe

    setup_logging(verbose=0, quiet=False)
    stage1 = Path(args.data_dir) / STAGE1_WEIGHTS
    init = None
    if finetune is not None and args.init_weights is not None and args.stage != "finetune":
        raise SystemExit(
            f"--init-weights {args.init_weights}: only with --stage finetune (stage 1 makes them otherwise)"
        )
    if finetune is not None and (args.stage == "finetune" or (args.stage == "all" and finetune.in_all)):
        init = Path(args.init_weights) if args.init_weights is not None else stage1
        if args.stage == "finetune" and not init.is_file():  # checked before any data is generated
            raise SystemExit(
                f"{init}: no stage-1 weights to fine-tune from; run --stage train first or pass --init-weights FILE"
            )
    start = time.perf_counter()
    manifest = make_data({"training": args.train, "validation": args.val, "test": args.test})
    print(f"data: {manifest} ({time.perf_counter() - start:.0f} s)")
    if Path(args.data_dir).resolve() == default_data_dir.resolve() and args.fov_scale == 1.0:
        write_manifest(relocated(manifest, example_manifest.parent), example_manifest)
    if args.stage == "data":
        return 0
    overrides = {} if args.samples_per_case is None else {"samples_per_case": args.samples_per_case}
    options = TrainOptions(
        max_epochs=args.max_epochs, val_interval=args.val_interval, device=args.device, seed=0, overrides=overrides
    )
    eval_dir = Path(args.data_dir) / "eval"
    if args.stage in ("all", "train"):
        figures = run_recipe(args.bundle, manifest, stage="train", options=options, eval_dir=eval_dir)
        _print_training("stage 1" if finetune is not None and finetune.in_all else "train", figures)
        if finetune is not None:  # kept for a later --stage finetune too
            shutil.copyfile(figures["train"].weights, stage1)
            print(f"stage 1 weights: {stage1}")
    if finetune is not None and init is not None:
        if init.resolve() != stage1.resolve():
            shutil.copyfile(init, stage1)  # the bundle's model.pt is overwritten while stage 2 trains
        samples = {}
        if getattr(args, "finetune_samples", None) is not None:
            samples = {key: args.finetune_samples for key in finetune.sample_keys}
        options2 = TrainOptions(
            max_epochs=args.finetune_epochs,
            val_interval=args.finetune_val_interval,
            device=args.device,
            seed=0,
            layers=(finetune.layer,),
            overrides={
                **overrides,
                **samples,
                "init_weights": str(stage1.resolve()),
                "learning_rate": args.finetune_lr,
            },
        )
        figures = run_recipe(args.bundle, manifest, stage="train", options=options2, eval_dir=eval_dir)
        _print_training("stage 2", figures)
    if args.stage in ("all", "evaluate"):
        figures = run_recipe(args.bundle, manifest, stage="evaluate", eval_dir=eval_dir, device=args.device)
        print(json.dumps(figures["evaluation"]["mean"], indent=1))
    return 0


def _print_training(name: str, figures: dict) -> None:
    result = figures["train"]
    print(
        f"{name}: best validation mean Dice {result.best_metric:.4f} at epoch {result.best_epoch} "
        f"({figures['train_minutes']:.1f} min)"
    )
