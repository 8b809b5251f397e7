#!/usr/bin/env python
"""Train the CT U-Net bundle on generated phantoms and evaluate it on held-out phantoms.

This is how ``bundles/ct_abdomen_unet/models/model.pt`` was made. Every step is deterministic
under the seeds it uses; on 2 CPU cores the default run takes about half an hour.

    python scripts/train_ct_unet.py                      # generate data, train, evaluate
    python scripts/train_ct_unet.py --stage evaluate     # evaluate the shipped weights only

Phantoms go to ``data/phantoms/ct/`` (not tracked by git); the evaluation writes per-case and
mean metrics to ``data/phantoms/ct/eval/`` and prints the table the bundle's docs quote.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "ct_abdomen_unet")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "phantoms" / "ct")
    parser.add_argument("--train", type=int, default=24, help="training phantoms")
    parser.add_argument("--val", type=int, default=4, help="validation phantoms")
    parser.add_argument("--test", type=int, default=10, help="held-out test phantoms")
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--val-interval", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stage", choices=("all", "data", "train", "evaluate"), default="all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from pipelines.demo import make_ct_dataset, relocated
    from pipelines.manifests import write_manifest
    from pipelines.train import TrainOptions, run_recipe

    start = time.perf_counter()
    manifest = make_ct_dataset(
        args.data_dir, args.bundle, counts={"training": args.train, "validation": args.val, "test": args.test}
    )
    print(f"data: {manifest} ({time.perf_counter() - start:.0f} s)")
    example = REPO / "data_manifests" / "ct_phantoms.json"
    if args.data_dir.resolve() == (REPO / "data" / "phantoms" / "ct").resolve():
        # The example manifest in data_manifests/ points at the same files, relative to itself.
        write_manifest(relocated(manifest, example.parent), example)
    options = TrainOptions(
        max_epochs=args.max_epochs,
        val_interval=args.val_interval,
        device=args.device,
        seed=0,
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
