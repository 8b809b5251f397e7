"""``medseg batch``: parse the options, join torchrun's process group, run, print the summary."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pipelines.batch.options import BATCH_SPLITS, DISTRIBUTED_TIMEOUT, BatchOptions, BatchSummary
from pipelines.cli.bundle import add_bundle_option, add_override_option
from pipelines.cli.common import (
    add_case_options,
    add_path_policy_option,
    add_run_options,
    case_option_values,
    heavy_imports,
)


def add_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``batch`` subcommand to an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "batch",
        help="segment every case of a manifest split, resumable, on one or many GPUs (torchrun)",
        description=(
            "Segment every case of a manifest split into OUTPUT/<case_id>/, recording each case in "
            "OUTPUT/ledger.jsonl and writing OUTPUT/report.html. Scale out with "
            "`torchrun --nproc_per_node N -m pipelines batch ...` (several nodes: OUTPUT and the "
            "inputs must be on a filesystem every node sees). One run at a time per OUTPUT: a second "
            "run, with or without --resume, is refused while OUTPUT/.medseg-batch.lock is held."
        ),
    )
    p.add_argument(
        "manifest",
        type=Path,
        help="data manifest (JSON, Decathlon dataset.json style), or a MONAI Model Zoo datalist "
        '({"testing": [{"image": ...}]}; its "testing" list is the test split)',
    )
    p.add_argument(
        "--dataset-dir",
        type=Path,
        default=None,
        help="for a Zoo datalist: the folder its relative paths are resolved against and must stay inside, "
        "as the Zoo configs' dataset_dir (default: --override dataset_dir=DIR when given, else the datalist's folder)",
    )
    add_bundle_option(p, required=True)
    add_override_option(p)
    p.add_argument("--output", "-o", type=Path, required=True, help="output folder; results go to OUTPUT/<case-id>/")
    p.add_argument("--split", default="test", choices=BATCH_SPLITS, help="manifest split to run (default: test)")
    p.add_argument("--resume", action="store_true", help="continue a run: skip cases already done with the same input")
    p.add_argument("--retry-failed", action="store_true", help="with --resume, also rerun cases that failed")
    add_case_options(p)
    add_path_policy_option(p)
    add_run_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=_cmd_batch)
    return p


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)") from err


def _cmd_batch(args: argparse.Namespace) -> int:
    # torch and the batch machinery are imported only when the command runs, not while parsing.
    with heavy_imports():
        import torch
        import torch.distributed as dist

        from pipelines.batch.run import run_batch

    # torchrun announces the ranks through the environment; only this command layer reads it.
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = args.device
    use_cuda = torch.cuda.is_available() and device.strip().lower() in ("auto", "cuda")
    if world_size > 1 and use_cuda:
        if not 0 <= local_rank < torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                "start at most that many processes per node (torchrun --nproc_per_node)"
            )
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    started_group = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda or device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, timeout=DISTRIBUTED_TIMEOUT)
        started_group = True
    options = BatchOptions(
        split=args.split,
        resume=args.resume,
        retry_failed=args.retry_failed,
        device=device,
        precision=args.precision,
        progress=False if getattr(args, "no_progress", False) else None,
        allow_outside_paths=args.allow_outside_paths,
        dataset_dir=args.dataset_dir,
        **case_option_values(args),
    )
    run_id = os.environ.get("TORCHELASTIC_RUN_ID") if world_size > 1 else None
    try:
        summary = run_batch(
            args.manifest, args.bundle, args.output, options, rank=rank, world_size=world_size, run_id=run_id
        )
    finally:
        if started_group:
            dist.destroy_process_group()
    if rank == 0:
        _print_summary(summary)
        if summary.report_error is not None:
            print(f"medseg: error: {summary.report_error}", file=sys.stderr)
        flagged = _flagged_cases(args) if args.fail_on_flags else []
        if flagged:  # --fail-on-flags: QC-flagged cases count as failed in the exit status (results are written)
            print(f"QC: {len(flagged)} case(s) flagged (--fail-on-flags): {', '.join(flagged)}", file=sys.stderr)
            return 1
    return 1 if summary.has_failures or summary.report_error is not None else 0


def _flagged_cases(args: argparse.Namespace) -> list[str]:
    from pipelines.batch.flags import flagged_cases

    return flagged_cases(args.output)


def _print_summary(summary: BatchSummary) -> None:
    print(
        f"batch: {summary.ok} ok, {summary.failed} failed, {summary.skipped} skipped"
        + (f", {summary.failed_earlier} failed earlier (not retried)" if summary.failed_earlier else "")
        + f" of {summary.total} case(s) in {summary.wall_seconds:.1f} s"
        + f" ({summary.cases_per_minute:.1f} cases/min"
        + (f", {summary.world_size} ranks)" if summary.world_size > 1 else ")")
    )
    if summary.failures:
        print("failures:")
        for case_id, error in summary.failures:
            print(f"  {case_id}: {error}")
        if summary.failed_earlier:
            print("  (rerun failed cases with --resume --retry-failed)")
    if summary.report_html is not None:
        print(f"report: {summary.report_html}")
    print(f"ledger: {summary.ledger}")
