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

__all__ = ["FineTune", "recipe_parser", "run_recipe_from_args", "stage_weights"]

FINETUNE_SAMPLE_KEYS = ("randomised_samples", "classic_samples", "validation_samples")
"""The ids of a ``train_randomised`` layer that ``--finetune-samples`` sets."""

STAGE1_WEIGHTS = "stage1_model.pt"
"""Where a recipe with fine-tuning stages keeps the first stage's weights, in its ``--data-dir``."""


def stage_weights(data_dir: Path, stage: int) -> Path:
    """Where a recipe keeps stage ``stage``'s weights (``stage1_model.pt``, ``stage2_model.pt``, ...)."""
    return Path(data_dir) / f"stage{stage}_model.pt"


@dataclass(frozen=True)
class FineTune:
    """A recipe's fine-tuning stage: training continues from the previous stage's weights under config layers.

    Attributes:
        layers: configs in the bundle's ``configs/`` laid over ``train.json``, in order (e.g.
            ``("train_randomised",)``: synthesised, domain-randomised phantoms); they must load
            ``init_weights`` when set.
        max_epochs, val_interval, learning_rate: the stage's schedule.
        in_all: whether ``--stage all`` runs it (the shipped weights come from every such stage), and
            ``--stage finetune`` from an earlier stage. When False the stage is an experiment whose
            weights are not shipped: only ``--stage finetune`` naming it (``--from-stage N``; stage 2
            is the default) runs it, and no stage after it runs.
        sample_keys: the layers' ids that ``--finetune-samples`` sets (none: the option is not offered,
            as for a layer that trains on the stage-1 phantoms rather than synthesised samples).
        then: the next stage, which starts from this one's weights (stage 3 after stage 2, ...).
        phantoms: phantoms of the script's own that the stage trains and validates on, by name (the script's
            ``make_data(counts, phantoms)`` draws them, in a folder of their own); None: the stage-1 phantoms.
            Where a shipped stage has them, ``--stage all`` and ``--stage evaluate`` score the held-out
            phantoms of both kinds.
    """

    layers: tuple[str, ...]
    max_epochs: int
    val_interval: int
    learning_rate: float
    in_all: bool = True
    sample_keys: tuple[str, ...] = FINETUNE_SAMPLE_KEYS
    then: FineTune | None = None
    phantoms: str | None = None

    def chain(self) -> list[FineTune]:
        """This stage and every one after it, in order."""
        return [self] + (self.then.chain() if self.then is not None else [])


def recipe_parser(
    description: str,
    *,
    bundle: Path,
    data_dir: Path,
    counts: dict[str, int],
    max_epochs: int | None = None,
    val_interval: int | None = None,
    finetune: FineTune | None = None,
    phantoms: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """The command line every weights script shares; a script adds its own options to it.

    Args:
        description: the script's one-line summary.
        bundle, data_dir: default bundle folder and phantom folder.
        counts: default phantoms per split (``training``, ``validation``, ``test``).
        max_epochs, val_interval: defaults; None keeps the bundle's train.json values.
        finetune: the recipe's first fine-tuning stage (stage 2) and, through its ``then``, the ones
            after it, if it has any (adds ``--stage finetune`` and its options).
        phantoms: names of other phantoms the script draws (adds ``--phantoms``): the whole run, stage 1
            included, then uses ``<data-dir>/<name>``, as a fine-tuning stage's phantoms do
            (:attr:`FineTune.phantoms`), so that they are never mixed with the default ones.
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
    if phantoms:
        parser.add_argument(
            "--phantoms",
            choices=phantoms,
            default=None,
            help="train and evaluate on these phantoms instead of the default ones; data, stage weights and "
            "evaluation go to <data-dir>/<name> (cases on disk are known by their geometry only)",
        )
    stages = (
        ("all", "data", "train", "evaluate") if finetune is None else ("all", "data", "train", "finetune", "evaluate")
    )
    stage_help = None
    if finetune is not None:
        chain = finetune.chain()
        names = ", ".join(
            f"stage {n} (configs/{'+'.join(f.layers)}"
            + ("" if f.in_all else f", an experiment: only --stage finetune{f' --from-stage {n}' if n > 2 else ''}")
            + ")"
            for n, f in enumerate(chain, start=2)
        )
        stage_help = (
            f"all: data, train (stage 1, phantoms){', finetune' if finetune.in_all else ''}, evaluate; fine-tuning "
            f"stages: {names}; train and finetune run their stages alone"
        )
        each = "each fine-tuning stage's" if len(chain) > 1 else "stage 2"
        parser.add_argument(
            "--finetune-epochs",
            type=int,
            default=None,
            help=f"{each} epochs (default: {_per_stage(chain, 'max_epochs')})",
        )
        parser.add_argument(
            "--finetune-val-interval",
            type=int,
            default=None,
            help=f"{each} epochs between validations (default: {_per_stage(chain, 'val_interval')})",
        )
        parser.add_argument(
            "--finetune-lr",
            type=float,
            default=None,
            help=f"{each} learning rate (default: {_per_stage(chain, 'learning_rate')})",
        )
        if any(f.sample_keys for f in chain):
            parser.add_argument(
                "--finetune-samples",
                type=int,
                default=None,
                help="synthesised samples per epoch of each kind, and validation samples, of each fine-tuning "
                "stage that synthesises them (default: its layers'; 1 for smoke runs)",
            )
        if len(chain) > 1:
            parser.add_argument(
                "--from-stage",
                type=int,
                choices=range(2, len(chain) + 2),
                default=2,
                help="with --stage finetune: the first fine-tuning stage to run (default: %(default)s)",
            )
        parser.add_argument(
            "--init-weights",
            type=Path,
            default=None,
            help="weights the first fine-tuning stage run starts from (default: <data-dir>/stage<N-1>_model.pt, "
            f"which the stage before writes; {STAGE1_WEIGHTS} for stage 2)",
        )
    parser.add_argument("--stage", choices=stages, default="all", help=stage_help)
    return parser


def run_recipe_from_args(
    args: argparse.Namespace,
    make_data: Callable[..., Path],
    *,
    example_manifest: Path,
    default_data_dir: Path,
    finetune: FineTune | None = None,
) -> int:
    """Generate the data, train and evaluate as a weights script's arguments say; print the figures.

    Args:
        args: parsed from :func:`recipe_parser`.
        make_data: ``make_data(counts) -> manifest``, the script's phantom generator, given the
            cases per split from ``--train/--val/--test``; ``make_data(counts, name)`` for the phantoms a
            fine-tuning stage names (:attr:`FineTune.phantoms`) or ``--phantoms`` names, which it draws in
            ``<data-dir>/<name>``.
        example_manifest: the example manifest in ``data_manifests/`` that documents the dataset; it is
            rewritten to point at the phantoms when they went to ``default_data_dir`` at full field
            of view.
        default_data_dir: the script's default ``--data-dir``.
        finetune: the recipe's first fine-tuning stage, with its ``then`` chain (the same as given to
            :func:`recipe_parser`), if any.
    """
    from pipelines.data.datasets import relocated
    from pipelines.data.manifests.model import write_manifest
    from pipelines.train import TrainOptions, run_recipe

    setup_logging(verbose=0, quiet=False)
    own = getattr(args, "phantoms", None)  # the whole run's phantoms (--phantoms), when not the default ones
    root = Path(args.data_dir) if own is None else Path(args.data_dir) / own
    stage1 = stage_weights(root, 1)
    chain = finetune.chain() if finetune is not None else []
    first = getattr(args, "from_stage", 2)  # the first fine-tuning stage to run
    if finetune is not None and args.stage != "finetune":
        for option, value, default in (("--init-weights", args.init_weights, None), ("--from-stage", first, 2)):
            if value != default:
                raise SystemExit(f"{option} {value}: only with --stage finetune (else the stages before decide)")
    runs: list[tuple[int, FineTune]] = []  # (stage number, stage) to run after stage 1
    init = stage_weights(root, first - 1)
    if finetune is not None and args.stage in ("finetune", "all"):
        for number, stage in enumerate(chain, start=2):
            if number < first:
                continue
            if not stage.in_all and not (args.stage == "finetune" and number == first):
                break  # an experiment runs only when named, and nothing is built on it
            runs.append((number, stage))
        init = Path(args.init_weights) if args.init_weights is not None else init
        if args.stage == "finetune" and not init.is_file():  # checked before any data is generated
            raise SystemExit(
                f"{init}: no stage-{first - 1} weights to fine-tune from; run the stage before first or pass "
                "--init-weights FILE"
            )
    counts = {"training": args.train, "validation": args.val, "test": args.test}
    start = time.perf_counter()
    manifest = make_data(counts) if own is None else make_data(counts, own)
    print(f"data: {manifest} ({time.perf_counter() - start:.0f} s)")
    kinds = {stage.phantoms for _, stage in runs}
    if args.stage in ("all", "data", "evaluate"):  # and those the shipped weights were trained on, to score them
        kinds |= {f.phantoms for f in _shipped(chain)}
    manifests = {None: manifest}
    for kind in sorted(kinds - {None}):  # the phantoms of fine-tuning stages, drawn before any training
        start = time.perf_counter()
        manifests[kind] = make_data(counts, kind)
        print(f"data ({kind}): {manifests[kind]} ({time.perf_counter() - start:.0f} s)")
    if own is None and Path(args.data_dir).resolve() == default_data_dir.resolve() and args.fov_scale == 1.0:
        write_manifest(relocated(manifest, example_manifest.parent), example_manifest)
    if args.stage == "data":
        return 0
    overrides = {} if args.samples_per_case is None else {"samples_per_case": args.samples_per_case}
    options = TrainOptions(
        max_epochs=args.max_epochs, val_interval=args.val_interval, device=args.device, seed=0, overrides=overrides
    )
    eval_dir = root / "eval"
    if args.stage in ("all", "train"):
        figures = run_recipe(args.bundle, manifest, stage="train", options=options, eval_dir=eval_dir)
        _print_training("stage 1" if finetune is not None and finetune.in_all else "train", figures)
        if finetune is not None:  # kept for a later --stage finetune too
            shutil.copyfile(figures["train"].weights, stage1)
            print(f"stage 1 weights: {stage1}")
    for number, stage in runs:
        previous = stage_weights(root, number - 1)
        if init.resolve() != previous.resolve():
            shutil.copyfile(init, previous)  # the bundle's model.pt is overwritten while the stage trains
        samples = {}
        if getattr(args, "finetune_samples", None) is not None:
            samples = {key: args.finetune_samples for key in stage.sample_keys}
        options_n = TrainOptions(
            max_epochs=stage.max_epochs if args.finetune_epochs is None else args.finetune_epochs,
            val_interval=stage.val_interval if args.finetune_val_interval is None else args.finetune_val_interval,
            device=args.device,
            seed=0,
            layers=stage.layers,
            overrides={
                **overrides,
                **samples,
                "init_weights": str(previous.resolve()),
                "learning_rate": stage.learning_rate if args.finetune_lr is None else args.finetune_lr,
            },
        )
        figures = run_recipe(
            args.bundle, manifests[stage.phantoms], stage="train", options=options_n, eval_dir=eval_dir
        )
        _print_training(f"stage {number}", figures)
        init = stage_weights(root, number)
        if stage.then is not None:  # kept for the next stage, and for a later --from-stage
            shutil.copyfile(figures["train"].weights, init)
            print(f"stage {number} weights: {init}")
    if args.stage in ("all", "evaluate"):
        for kind, held_out in manifests.items():  # the stage-1 phantoms, then those of a shipped stage
            folder = eval_dir if kind is None else eval_dir / kind
            figures = run_recipe(args.bundle, held_out, stage="evaluate", eval_dir=folder, device=args.device)
            if len(manifests) > 1:
                print(f"held-out phantoms: {'stage 1' if kind is None else kind}")
            print(json.dumps(figures["evaluation"]["mean"], indent=1))
    return 0


def _shipped(chain: list[FineTune]) -> list[FineTune]:
    """The fine-tuning stages ``--stage all`` runs: those before the first experiment."""
    shipped = []
    for stage in chain:
        if not stage.in_all:
            break
        shipped.append(stage)
    return shipped


def _per_stage(chain: list[FineTune], attribute: str) -> str:
    """A schedule value of each fine-tuning stage, for the help text (``8`` or ``stage 2: 8, stage 3: 4``)."""
    values = [getattr(f, attribute) for f in chain]
    if len(values) == 1:
        return str(values[0])
    return ", ".join(f"stage {n}: {v}" for n, v in enumerate(values, start=2))


def _print_training(name: str, figures: dict) -> None:
    result = figures["train"]
    print(
        f"{name}: best validation mean Dice {result.best_metric:.4f} at epoch {result.best_epoch} "
        f"({figures['train_minutes']:.1f} min)"
    )
