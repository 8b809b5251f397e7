#!/usr/bin/env python
"""Train the CT multi-organ UNETR bundle on generated phantoms and evaluate it on held-out phantoms.

This is how ``bundles/ct_multiorgan_unetr/models/model.pt`` is made. The phantoms carry the 13
BTCV organs (liver lesions labelled as liver). Every step is deterministic under the seeds it uses.
UNETR is a 93 M parameter transformer: train it on a GPU (hours on a CPU).

    python scripts/train_unetr.py --device cuda           # generate data, train, evaluate
    python scripts/train_unetr.py --stage evaluate        # evaluate models/model.pt only
    python scripts/train_unetr.py --bundle /tmp/unetr_copy --data-dir /tmp/unetr_data \\
        --train 2 --val 1 --test 1 --max-epochs 1 --val-interval 1 --fov-scale 0.4 --samples-per-case 1
                                                          # smoke run on a copy of the bundle

Phantoms go to ``data/phantoms/ct_multiorgan/`` (not tracked by git); the evaluation writes per-case
and mean metrics to ``<data-dir>/eval/`` and prints the mean per structure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data" / "phantoms" / "ct_multiorgan"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "ct_multiorgan_unetr")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train", type=int, default=40, help="training phantoms")
    parser.add_argument("--val", type=int, default=4, help="validation phantoms")
    parser.add_argument("--test", type=int, default=10, help="held-out test phantoms")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--val-interval", type=int, default=10)
    parser.add_argument(
        "--samples-per-case",
        type=int,
        default=None,
        help="96³ patches per case and iteration (default: the bundle's, 4)",
    )
    parser.add_argument(
        "--fov-scale",
        type=float,
        default=1.0,
        help="shrink the phantoms' field of view (0-1] for quick smoke runs (default 1)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--stage", choices=("all", "data", "train", "evaluate"), default="all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from pipelines.demo import make_phantom_dataset, relocated
    from pipelines.manifests import write_manifest
    from pipelines.train import TrainOptions, run_recipe

    start = time.perf_counter()
    manifest = make_phantom_dataset(
        args.data_dir,
        args.bundle,
        kind="ct",
        name="ct_multiorgan_phantoms",
        fov_scale=args.fov_scale,
        counts={"training": args.train, "validation": args.val, "test": args.test},
    )
    print(f"data: {manifest} ({time.perf_counter() - start:.0f} s)")
    example = REPO / "data_manifests" / "ct_multiorgan_phantoms.json"
    if args.data_dir.resolve() == DEFAULT_DATA.resolve() and args.fov_scale == 1.0:
        # train.json's default manifest: the same files, relative to data_manifests/.
        write_manifest(relocated(manifest, example.parent), example)
    overrides = {} if getattr(args, "samples_per_case", None) is None else {"samples_per_case": args.samples_per_case}
    options = TrainOptions(
        max_epochs=args.max_epochs,
        val_interval=args.val_interval,
        device=args.device,
        seed=0,
        overrides=overrides,
    )
    figures = run_recipe(
        args.bundle, manifest, stage=args.stage, options=options, eval_dir=args.data_dir / "eval", device=args.device
    )
    if figures["train"] is not None:
        print(
            f"train: best validation mean Dice {figures['train'].best_metric:.4f} at epoch "
            f"{figures['train'].best_epoch} ({figures['train_minutes']:.1f} min)"
        )
    if figures["evaluation"] is not None:
        print(json.dumps(figures["evaluation"]["mean"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
