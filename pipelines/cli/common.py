"""Options that several ``medseg`` subcommands share."""

from __future__ import annotations

import argparse

from pipelines.keys import OUTPUTS

__all__ = ["add_run_options", "outputs_arg"]


def outputs_arg(value: str) -> tuple[str, ...]:
    """``--outputs`` of ``segment`` and ``batch``: a comma list of output names."""
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown output(s) {', '.join(unknown) or repr(value)}; choose from {', '.join(OUTPUTS)}"
        )
    return names


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``, shared by the commands that run a network."""
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="compute precision; auto = bf16 where the hardware runs it fast, else fp32 (default: auto)",
    )
