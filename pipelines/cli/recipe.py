"""The command line the weights scripts (``scripts/train_*.py``) share: generate data, train, evaluate."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from pipelines.cli.common import setup_logging

__all__ = ["recipe_parser", "run_recipe_from_args"]


def recipe_parser(
    description: str,
    *,
    bundle: Path,
    data_dir: Path,
    counts: dict[str, int],
    max_epochs: int | None = None,
    val_interval: int | None = None,
) -> argparse.ArgumentParser:
    """The command line every weights script shares; a script adds its own options to it.

    Args:
        description: the script's one-line summary.
        bundle, data_dir: default bundle folder and phantom folder.
        counts: default phantoms per split (``training``, ``validation``, ``test``).
        max_epochs, val_interval: defaults; None keeps the bundle's train.json values.
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
    parser.add_argument("--stage", choices=("all", "data", "train", "evaluate"), default="all")
    return parser


def run_recipe_from_args(
    args: argparse.Namespace,
    make_data: Callable[[dict[str, int]], Path],
    *,
    example_manifest: Path,
    default_data_dir: Path,
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
    """
    from pipelines.data.datasets import relocated
    from pipelines.data.manifests.model import write_manifest
    from pipelines.train import TrainOptions, run_recipe

    setup_logging(verbose=0, quiet=False)
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
    figures = run_recipe(
        args.bundle,
        manifest,
        stage=args.stage,
        options=options,
        eval_dir=Path(args.data_dir) / "eval",
        device=args.device,
    )
    if figures["train"] is not None:
        print(
            f"train: best validation mean Dice {figures['train'].best_metric:.4f} at epoch "
            f"{figures['train'].best_epoch} ({figures['train_minutes']:.1f} min)"
        )
    if figures["evaluation"] is not None:
        print(json.dumps(figures["evaluation"]["mean"], indent=1))
    return 0
