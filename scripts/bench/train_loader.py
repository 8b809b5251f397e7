#!/usr/bin/env python
"""Training throughput of a bundle's own trainer under two data loaders: seconds per iteration.

The training configs load cached cases through MONAI's ``ThreadDataLoader``: the random crops and
augmentation of the next batch run in a background thread while the network trains on this one.
On a machine of 2 cores that thread competes with PyTorch's two compute threads. This benchmark
runs the bundle's ``train#trainer`` (its network, loss, optimiser, bf16 autocast, augmentation)
for the same cases twice, once with the configured ``ThreadDataLoader`` and once with a plain
``DataLoader`` without workers (augmentation in line, between the steps), and prints the median
seconds per iteration of each and their ratio. No validation, no checkpoints. The order of the two
alternates over ``--repeats`` so that a drift of the machine's speed does not favour one.

    python scripts/bench/train_loader.py                                 # the UNETR bundle
    python scripts/bench/train_loader.py --bundle bundles/ct_abdomen_unet \\
        --manifest data_manifests/phantoms/ct/ct_phantoms.json
    python scripts/bench/train_loader.py --set patch_size=[64,64,64]   # any train.json value (JSON)
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import command_line, cpu_model, parse_overrides, write_report

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ct_multiorgan_unetr"
DATA = REPO / "data_manifests" / "phantoms" / "ct_multiorgan" / "ct_multiorgan_phantoms.json"

LOADERS = {
    "ThreadDataLoader (as configured)": None,
    "DataLoader, no workers": {
        "_target_": "DataLoader",
        "dataset": "@train#dataset",
        "batch_size": 1,
        "shuffle": True,
        "num_workers": 0,
    },
}


def build(args: argparse.Namespace, loader: dict | None):
    """The bundle's trainer, over the first ``--cases`` training cases, with ``loader`` as its data loader."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(args.bundle / "configs" / "train.json"))
    parser["bundle_root"] = str(args.bundle)
    parser["manifest"] = str(args.manifest.resolve())
    parser["device"] = "$torch.device('cpu')"
    parser["max_epochs"] = 1
    for key, value in args.set.items():
        parser[key] = value
    parser["train#dataset#data"] = f"$@train_datalist[:{args.cases}]"
    parser["train#dataset#progress"] = False
    parser["train#handlers"] = []  # no validation, checkpoints or schedule: only the steps are timed
    if loader is not None:
        parser["train#dataloader"] = loader
    parser.parse()
    return parser.get_parsed_content("train#trainer")


def time_epoch(trainer, skip: int) -> list[float]:
    """Seconds of each iteration of one epoch after the first ``skip`` (warm-up)."""
    from ignite.engine import Events

    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: stamps.append(time.perf_counter()))
    trainer.run()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return gaps[skip:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--manifest", type=Path, default=DATA)
    parser.add_argument("--cases", type=int, default=12, help="training cases, one iteration each (default 12)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per loader, alternating (default 2)")
    parser.add_argument("--skip", type=int, default=2, help="first iterations of each epoch not timed (default 2)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=JSON", help="override a train.json value (repeatable)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    args.set = parse_overrides(args.set)
    if not args.manifest.is_file():
        raise SystemExit(f"{args.manifest}: no such manifest; make the phantoms with the recipe's --stage data")
    import torch
    from monai.utils import set_determinism

    gaps: dict[str, list[float]] = {name: [] for name in LOADERS}
    for repeat in range(args.repeats):
        order = list(LOADERS) if repeat % 2 == 0 else list(reversed(LOADERS))
        for name in order:
            set_determinism(seed=repeat)
            trainer = build(args, LOADERS[name])
            gaps[name] += time_epoch(trainer, args.skip)
            print(f"{name}: repeat {repeat + 1}, median {statistics.median(gaps[name]):.3f} s/iteration", flush=True)
    medians = {name: round(statistics.median(values), 3) for name, values in gaps.items()}
    threaded, plain = medians.values()
    result = {
        "benchmark": "train_loader",
        "command": command_line("scripts/bench/train_loader.py"),
        "date": datetime.date.today().isoformat(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bundle": os.path.relpath(args.bundle.resolve(), REPO),
        "overrides": args.set,
        "cases": args.cases,
        "iterations_timed": {name: len(values) for name, values in gaps.items()},
        "median_s_per_iteration": medians,
        "threaded_over_plain": round(threaded / plain, 3),
    }
    print(json.dumps(result["median_s_per_iteration"]), f"ratio threaded/plain {result['threaded_over_plain']}")
    write_report(result, args.json, "train-loader")
    return 0


if __name__ == "__main__":
    sys.exit(main())
