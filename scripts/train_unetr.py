#!/usr/bin/env python
"""Train the CT multi-organ UNETR bundle on generated phantoms and evaluate it on held-out phantoms.

This is how ``bundles/ct_multiorgan_unetr/models/model.pt`` is made: since 0.5.0 with ``--phantoms
perirenal_fat`` (the phantoms whose kidneys and adrenal glands lie in their perirenal fat). The phantoms
carry the 13 BTCV organs (liver lesions labelled as liver). Every step is deterministic under the seeds
it uses. The defaults are the CPU recipe the bundle's docs report: 48 training, 6 validation and 10 test
phantoms, 2 class-balanced 64³ patches per case and iteration, 64 epochs (3072 iterations) of the
bundle's network (0.5.0: a UNETR with 8³ tokens, 1.65 M parameters), AdamW 1e-3 with a 100-iteration
warm-up and cosine decay. Validation takes 6 cases so that it holds wide square torso fields of view (2 of the
6) as the test split does (5 of 10): a model can fail on those alone, and checkpoints are chosen on
validation. Stage 2 (``configs/train_small_structures.json``) continues from stage 1's best weights
for 8 epochs at AdamW 3e-4, with patch centres and DiceCE class weights tilted towards the
esophagus and adrenal glands, on volumes cropped to the body. The best checkpoint by validation
Dice is stored in float16 (``medseg_weights_dtype`` in the bundle's metadata), then the held-out
phantoms are scored with those stored weights. Stage 3, an experiment whose weights are not shipped,
runs stage 2's schedule again from its weights on phantoms whose kidneys and adrenal glands lie in their
perirenal fat (the right adrenal gland out of the liver; ``<data-dir>/perirenal_fat/``).

    python scripts/train_unetr.py --phantoms perirenal_fat   # the CPU recipe of the shipped weights (stages 1 and 2)
    python scripts/train_unetr.py                         # the same on the classic phantoms (0.3.0-0.4.x)
    python scripts/train_unetr.py --phantoms perirenal_fat --stage finetune --init-weights STAGE1.pt   # stage 2 alone
    python scripts/train_unetr.py --stage finetune --from-stage 3 --bundle COPY --data-dir DIR \\
        --init-weights bundles/ct_multiorgan_unetr/models/model.pt   # the stage-3 experiment, on a copy
    python scripts/train_unetr.py --device cuda --max-epochs 200 --val-interval 10
    python scripts/train_unetr.py --phantoms perirenal_fat --stage evaluate   # evaluate models/model.pt only
    python scripts/train_unetr.py --bundle /tmp/unetr_copy --data-dir /tmp/unetr_data \\
        --train 2 --val 1 --test 1 --max-epochs 1 --val-interval 1 --fov-scale 0.4 --samples-per-case 1
                                                          # smoke run on a copy of the bundle

Phantoms go to ``data_manifests/phantoms/ct_multiorgan/`` (not tracked by git); the evaluation writes per-case
and mean metrics to ``<data-dir>/eval/`` and prints the mean per structure.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data_manifests" / "phantoms" / "ct_multiorgan"
PERIRENAL = "perirenal_fat"


def main() -> int:
    from pipelines.cli.recipe import FineTune, recipe_parser, run_recipe_from_args
    from pipelines.data.datasets import make_phantom_dataset

    stage2 = FineTune(
        layers=("train_small_structures",), max_epochs=8, val_interval=4, learning_rate=3e-4, sample_keys=()
    )
    # stage 3: stage 2's schedule again, on phantoms whose kidneys and adrenal glands lie in their perirenal
    # fat (the right adrenal gland out of the liver), in <data-dir>/perirenal_fat
    # an experiment, its weights not shipped: they would not fit the repository's budget for this bundle (docs)
    finetune = replace(stage2, then=replace(stage2, phantoms=PERIRENAL, in_all=False))
    parser = recipe_parser(
        __doc__.splitlines()[0],
        bundle=REPO / "bundles" / "ct_multiorgan_unetr",
        data_dir=DEFAULT_DATA,
        counts={"training": 48, "validation": 6, "test": 10},
        max_epochs=64,
        val_interval=16,
        finetune=finetune,
        phantoms=(PERIRENAL,),
    )
    args = parser.parse_args()

    def make_data(counts: dict[str, int], phantoms: str | None = None) -> Path:
        # cases on disk are known by their geometry only: each kind of phantom has a folder of its own
        return make_phantom_dataset(
            args.data_dir if phantoms is None else args.data_dir / phantoms,
            args.bundle,
            kind="ct",
            name="ct_multiorgan_phantoms",
            fov_scale=args.fov_scale,
            counts=counts,
            perirenal_fat=phantoms == PERIRENAL,
        )

    example = REPO / "data_manifests" / "ct_multiorgan_phantoms.json"
    return run_recipe_from_args(
        args, make_data, example_manifest=example, default_data_dir=DEFAULT_DATA, finetune=finetune
    )


if __name__ == "__main__":
    sys.exit(main())
