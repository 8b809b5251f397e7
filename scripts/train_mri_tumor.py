#!/usr/bin/env python
"""Train the MRI brain tumour bundle on generated head phantoms and evaluate it on held-out phantoms.

This is how ``bundles/mri_brain_tumor/models/model.pt`` is made. Every step is deterministic under
the seeds it uses.

    python scripts/train_mri_tumor.py --device cuda       # generate data, train, evaluate
    python scripts/train_mri_tumor.py --stage evaluate    # evaluate models/model.pt only
    python scripts/train_mri_tumor.py --stage finetune --init-weights models/model.pt
                                                          # the domain-randomised stage 2 (an experiment, not shipped)
    python scripts/train_mri_tumor.py --phantoms varied_heads
                                                          # heads with scalp fat, tumours of three kinds, all in
                                                          # <data-dir>/varied_heads/ (phantoms, stage weights, eval)
    python scripts/train_mri_tumor.py --phantoms mixed_heads --max-epochs 60
                                                          # the default and the varied heads together
    python scripts/train_mri_tumor.py --channels 4        # T1c, T1, T2, FLAIR; set num_channels to 4
                                                          # in inference.json, train.json, metadata.json first
    python scripts/train_mri_tumor.py --bundle /tmp/mri_copy --data-dir /tmp/mri_data \\
        --train 2 --val 1 --test 1 --max-epochs 1 --val-interval 1 --fov-scale 0.4 --samples-per-case 1
                                                          # smoke run on a copy of the bundle

Phantoms go to ``data_manifests/phantoms/brain_tumor/`` (not tracked by git); the evaluation writes per-case
and mean metrics to ``<data-dir>/eval/`` and prints the mean per structure.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data_manifests" / "phantoms" / "brain_tumor"
FINETUNE_EPOCHS = 6
VARIED_HEADS = "varied_heads"
"""``--phantoms`` name of the heads with T1-bright scalp fat and diploe, and ring, solid or patchy tumours."""
MIXED_HEADS = "mixed_heads"
"""``--phantoms`` name of the default heads and the varied ones together (each split holds both)."""


def bundle_channels(bundle: Path) -> dict[str, int]:
    """``num_channels`` as each config of the bundle states it."""
    from pipelines.bundles.bundle import load_bundle, parse_config

    opened = load_bundle(bundle)
    found = {name: int(parse_config(opened, name)["num_channels"]) for name in ("inference", "train")}
    found["metadata"] = int(opened.metadata["network_data_format"]["inputs"]["image"]["num_channels"])
    return found


def main() -> int:
    from pipelines.cli.recipe import FineTune, recipe_parser, run_recipe_from_args
    from pipelines.data.datasets import make_brain_dataset, merged_manifest

    # stage 2 is an experiment here, its weights not shipped (see the bundle's docs): only --stage finetune runs it
    finetune = FineTune(
        layers=("train_randomised",), max_epochs=FINETUNE_EPOCHS, val_interval=2, learning_rate=5e-4, in_all=False
    )

    parser = recipe_parser(
        __doc__.splitlines()[0],
        bundle=REPO / "bundles" / "mri_brain_tumor",
        data_dir=DEFAULT_DATA,
        counts={"training": 16, "validation": 4, "test": 8},
        finetune=finetune,
        phantoms=(VARIED_HEADS, MIXED_HEADS),
    )
    parser.add_argument(
        "--channels", type=int, default=None, help="MR contrasts per case, 1-4 (default: the bundle's num_channels)"
    )
    args = parser.parse_args()

    stated = bundle_channels(args.bundle)
    channels = args.channels if args.channels is not None else stated["inference"]
    if any(n != channels for n in stated.values()):
        parser.error(
            f"--channels {channels}: {args.bundle} states num_channels "
            f"{', '.join(f'{v} in {k}' for k, v in stated.items())}; set num_channels to {channels} in "
            "configs/inference.json, configs/train.json and metadata.json (network_data_format.inputs.image) first"
        )
    name = "brain_tumor_phantoms" if channels == 1 else f"brain_tumor_phantoms_{channels}ch"

    def make_data(counts: dict[str, int], phantoms: str | None = None) -> Path:
        # cases on disk are known by their geometry only: each kind of phantom has a folder of its own
        folder = args.data_dir if phantoms is None else args.data_dir / phantoms
        if phantoms == MIXED_HEADS:  # the same seeds drawn both ways, in one manifest
            parts = {kind: make_heads(folder / kind, counts, kind == "varied") for kind in ("classic", "varied")}
            return merged_manifest(parts, folder / f"{name}.json")
        return make_heads(folder, counts, phantoms == VARIED_HEADS)

    def make_heads(folder: Path, counts: dict[str, int], varied: bool) -> Path:
        return make_brain_dataset(
            folder, args.bundle, channels=channels, name=name, fov_scale=args.fov_scale, counts=counts, varied=varied
        )

    example = REPO / "data_manifests" / f"{name}.json"
    return run_recipe_from_args(
        args, make_data, example_manifest=example, default_data_dir=DEFAULT_DATA, finetune=finetune
    )


if __name__ == "__main__":
    sys.exit(main())
