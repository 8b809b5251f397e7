#!/usr/bin/env python
"""Training step time of a bundle's network in float32 and in bf16 autocast on this CPU.

One step is what the bundle's trainer does per iteration: a batch of patches forward, a loss,
backward and an AdamW step. The two precisions alternate (fp32, bf16, fp32, bf16, ...) so a
slowdown of the shared machine hits both; the figures are medians over the rounds, and the ratio
is bf16 / fp32 (above 1: bf16 is slower). ``pipelines.train.training_precision`` picks bf16 only
on CPUs with bf16 instructions; this measures why.

    python scripts/bench/train_precision.py                                  # CT U-Net, 4 x 96^3
    python scripts/bench/train_precision.py --bundle bundles/ct_multiorgan_unetr --patch 64 --batch 2
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from machine import command_line, cpu_kind, cpu_model, write_report  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "ct_abdomen_unet")
    parser.add_argument("--patch", type=int, default=96, help="patch edge (voxels)")
    parser.add_argument("--batch", type=int, default=4, help="patches per step")
    parser.add_argument("--rounds", type=int, default=3, help="steps timed per precision (after one warm-up)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from pipelines.bundles.bundle import config_parser
    from pipelines.inference import cpu_has_native_bf16
    from pipelines.train import training_precision

    parser_ = config_parser(args.bundle, [args.bundle / "configs" / "inference.json"])
    torch.manual_seed(0)
    network = parser_.get_parsed_content("network_def")
    channels = int(parser_.get_parsed_content("network_def#in_channels"))
    classes = int(parser_.get_parsed_content("network_def#out_channels"))
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    size = (args.batch, channels, args.patch, args.patch, args.patch)
    image = torch.randn(size)
    label = torch.randint(0, classes, (args.batch, args.patch, args.patch, args.patch))
    network.train()

    def step(precision: str) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            output = network(image)
        loss = torch.nn.functional.cross_entropy(output.float(), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for precision in times:
        step(precision)  # warm-up: oneDNN picks its kernels
    for _ in range(args.rounds):
        for precision in times:
            times[precision].append(step(precision))
    medians = {p: statistics.median(t) for p, t in times.items()}
    ratio = medians["bf16"] / medians["fp32"]
    print(f"{args.bundle.name}: {args.batch} x {args.patch}^3 per step, {torch.get_num_threads()} threads")
    for precision, seconds in medians.items():
        print(f"  {precision}: {seconds:.2f} s per step (median of {args.rounds})")
    print(
        f"  bf16 / fp32: {ratio:.2f}; bf16 instructions: {cpu_has_native_bf16()}; "
        f"training_precision picks {training_precision('cpu')}"
    )
    report = {
        "benchmark": "train_precision",
        "command": command_line("scripts/bench/train_precision.py"),
        "date": datetime.date.today().isoformat(),
        "cpu_model": cpu_model(),
        "cpu_kind": cpu_kind(),
        "cpu_count": torch.get_num_threads(),
        "bundle": args.bundle.name,
        "batch": args.batch,
        "patch": args.patch,
        "seconds": times,
        "median_seconds": medians,
        "bf16_over_fp32": ratio,
        "native_bf16": cpu_has_native_bf16(),
        "training_precision": training_precision("cpu"),
    }
    write_report(report, args.json, "train-precision")
    return 0


if __name__ == "__main__":
    sys.exit(main())
