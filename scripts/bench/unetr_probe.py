#!/usr/bin/env python
"""Short UNETR training probes: how fast the CT multi-organ UNETR learns under a few recipe settings.

A full run of the recipe (``scripts/train_unetr.py``) takes 1-2 hours on 2 CPU cores, too long to
try settings one by one. A probe trains the bundle's own network, loss, data and augmentation
(``configs/train.json`` of the bundle, read with MONAI's ``ConfigParser``) for a fixed, small
number of iterations from the same seed, with one setting changed, and then scores the
validation phantoms of the manifest by sliding window on the network's grid. Settings are chosen on
the validation phantoms only (never the test phantoms, never real scans). What is compared:

* the training loss (DiceCE, mean of each 10 iterations): the curve, not one figure;
* the validation mean Dice over the 13 organs after the last iteration, and per organ.

The probe's loop is plain PyTorch (bf16 autocast on a CPU, AdamW, a warm-up then cosine decay over
the probe's own iterations), not the ignite trainer: a probe of 60 iterations needs no checkpoints,
handlers or resuming, and it logs the loss every 10 iterations, which the recipe does not.

    python scripts/bench/unetr_probe.py                               # the three default settings
    python scripts/bench/unetr_probe.py --only lr-1e-3 --iters 120    # one of them, longer
    python scripts/bench/unetr_probe.py --iters 2 --train 2           # a smoke run (about a minute)

The phantoms come from ``scripts/train_unetr.py --stage data`` (its ``--data-dir``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import command_line, cpu_model, write_report

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ct_multiorgan_unetr"
DATA = REPO / "data_manifests" / "phantoms" / "ct_multiorgan" / "ct_multiorgan_phantoms.json"

# Each setting: overrides of the bundle's train.json. The first is the recipe as shipped.
SETTINGS: dict[str, dict] = {
    "recipe (lr 2e-4)": {},
    "lr-1e-3": {"learning_rate": 1e-3},
    "lr-1e-3, 3 mm grid": {"learning_rate": 1e-3, "pixdim": [3.0, 3.0, 3.0]},
    "lr-1e-3, 64³ patch": {"learning_rate": 1e-3, "patch_size": [64, 64, 64]},
}
# A 64³ patch costs about a quarter of a 96³ one (1.6 s against 6.7 s per iteration, measured), so that
# setting is compared at about equal time, not equal iterations: it runs --iters times this factor.
ITERS_FACTOR = {"lr-1e-3, 64³ patch": 3}
FEATURE_SIZE = 16  # the size that learnt fastest per iteration (bundle docs, "Sizes measured")


def probe(name: str, overrides: dict, args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from monai.bundle import ConfigParser
    from monai.data import CacheDataset, DataLoader
    from monai.inferers import SlidingWindowInferer
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot
    from monai.optimizers import WarmupCosineSchedule
    from monai.utils import set_determinism

    set_determinism(seed=0)
    iters = args.iters * ITERS_FACTOR.get(name, 1)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["manifest"] = str(args.manifest)
    parser["device"] = "$torch.device('cpu')"
    parser["network_def#feature_size"] = args.feature_size
    for key, value in overrides.items():
        parser[key] = value
    parser.parse()
    classes = int(parser.get_parsed_content("num_classes"))
    patch = parser.get_parsed_content("patch_size")
    training = CacheDataset(
        parser.get_parsed_content("train_datalist")[: args.train],
        transform=parser.get_parsed_content("train#preprocessing"),
        cache_rate=1.0,
        num_workers=2,
        copy_cache=False,
        progress=False,
    )
    validation = CacheDataset(
        parser.get_parsed_content("val_datalist"),
        transform=parser.get_parsed_content("validate#preprocessing"),
        cache_rate=1.0,
        num_workers=2,
        progress=False,
    )
    net = parser.get_parsed_content("network")
    loss_function = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")  # the recipe's AdamW: its learning rate and weight decay
    schedule = WarmupCosineSchedule(optimizer, warmup_steps=args.warmup, t_total=iters, end_lr=1e-5)
    loader = DataLoader(training, batch_size=1, shuffle=True, num_workers=0)
    losses: list[float] = []
    start = time.perf_counter()
    net.train()
    while len(losses) < iters:
        for batch in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = net(batch["image"])
            loss = loss_function(logits.float(), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss))
            if len(losses) >= iters:
                break
    train_s = time.perf_counter() - start
    net.eval()
    inferer = SlidingWindowInferer(patch, sw_batch_size=4, overlap=0.25, mode="gaussian")
    dice = DiceMetric(include_background=False, reduction="mean_batch")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for case in validation:
            pred = inferer(case["image"][None], net).float().argmax(1, keepdim=True)
            dice(one_hot(pred, classes), one_hot(case["label"][None], classes))
    per_organ = dice.aggregate().numpy()
    row = {
        "setting": name,
        "overrides": overrides,
        "iterations": iters,
        "train_seconds": round(train_s, 1),
        "loss_per_10_iterations": [round(float(np.mean(losses[i : i + 10])), 3) for i in range(0, len(losses), 10)],
        "val_mean_dice": round(float(np.nanmean(per_organ)), 3),
        "val_dice_per_label": [round(float(v), 3) for v in per_organ],
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=DATA)
    parser.add_argument("--only", choices=sorted(SETTINGS), action="append", help="run this setting (repeatable)")
    parser.add_argument("--iters", type=int, default=60, help="training iterations of 2 patches (default 60; 64³: 3x)")
    parser.add_argument("--train", type=int, default=16, help="training phantoms used (default 16)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up iterations (default 20)")
    parser.add_argument("--feature-size", type=int, default=FEATURE_SIZE)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    if not args.manifest.is_file():
        raise SystemExit(f"{args.manifest}: no phantoms; run python scripts/train_unetr.py --stage data first")
    import torch

    rows = [probe(name, SETTINGS[name], args) for name in (args.only or list(SETTINGS))]
    result = {
        "benchmark": "unetr_probe",
        "command": command_line("scripts/bench/unetr_probe.py"),
        "warmup_iterations": args.warmup,
        "date": datetime.date.today().isoformat(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "feature_size": args.feature_size,
        "training_phantoms": args.train,
        "labels": "val_dice_per_label: ids 1..13 of the bundle (spleen .. adrenal_gland_left)",
        "probes": rows,
    }
    write_report(result, args.json, "unetr-probe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
