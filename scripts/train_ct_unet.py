#!/usr/bin/env python
"""Train the CT U-Net bundle on generated phantoms and evaluate it on held-out phantoms.

This is how ``bundles/ct_abdomen_unet/models/model.pt`` was made. Every step is deterministic
under the seeds it uses. Stage 1 trains on the classic phantoms of the manifest (``train.json``),
stage 2 on synthesised, domain-randomised phantoms (``configs/train_randomised.json``), stage 3 the
same with the kidneys and adrenal glands in their perirenal fat (``configs/train_perirenal.json`` over
it); times and figures are in the bundle's docs.

    python scripts/train_ct_unet.py                      # generate data, stages 1-3, evaluate
    python scripts/train_ct_unet.py --stage finetune --from-stage 3 --init-weights STAGE2.pt   # stage 3 alone
    python scripts/train_ct_unet.py --stage evaluate     # evaluate the shipped weights only

Phantoms go to ``data_manifests/phantoms/ct/`` (not tracked by git); the evaluation writes per-case and
mean metrics to ``data_manifests/phantoms/ct/eval/`` and prints the table the bundle's docs quote.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data_manifests" / "phantoms" / "ct"
FINETUNE_EPOCHS = 8
PERIRENAL_EPOCHS = 8


def main() -> int:
    from pipelines.cli.recipe import FineTune, recipe_parser, run_recipe_from_args
    from pipelines.data.datasets import make_phantom_dataset

    perirenal = FineTune(
        layers=("train_randomised", "train_perirenal"),
        max_epochs=PERIRENAL_EPOCHS,
        val_interval=2,
        learning_rate=3e-4,
    )
    finetune = FineTune(
        layers=("train_randomised",), max_epochs=FINETUNE_EPOCHS, val_interval=2, learning_rate=5e-4, then=perirenal
    )

    parser = recipe_parser(
        __doc__.splitlines()[0],
        bundle=REPO / "bundles" / "ct_abdomen_unet",
        data_dir=DEFAULT_DATA,
        counts={"training": 24, "validation": 4, "test": 10},
        max_epochs=40,
        val_interval=4,
        finetune=finetune,
    )
    args = parser.parse_args()

    def make_data(counts: dict[str, int]) -> Path:
        return make_phantom_dataset(
            args.data_dir, args.bundle, kind="ct", name="ct_phantoms", fov_scale=args.fov_scale, counts=counts
        )

    example = REPO / "data_manifests" / "ct_phantoms.json"
    return run_recipe_from_args(
        args, make_data, example_manifest=example, default_data_dir=DEFAULT_DATA, finetune=finetune
    )


if __name__ == "__main__":
    sys.exit(main())
