"""Options that several ``medseg`` subcommands share."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.bundles.overrides import parse_overrides
from pipelines.keys import OUTPUTS

__all__ = [
    "add_case_options",
    "add_path_policy_option",
    "add_run_options",
    "case_option_values",
    "mesh_smoothing_arg",
    "outputs_arg",
    "series_rules_arg",
    "setup_logging",
]


@contextlib.contextmanager
def heavy_imports() -> Iterator[None]:
    """Import the numerical stack (torch, MONAI and what MONAI pulls in) inside this block.

    Importing MONAI builds a few hundred thousand objects that live as long as the process
    (modules, classes, functions). Python's cyclic garbage collector scans them again and again
    while they are being built, and once more when the interpreter exits; none of them is garbage.
    The collector is paused for the block, and what the block built is then moved to the permanent
    generation with ``gc.freeze()`` (the standard library's API for long-lived start-up state), so
    later collections skip it. On 2 CPU cores (Intel Xeon) the import of ``pipelines.segment`` went
    from 3.5 s to 2.9 s and the interpreter's exit from 0.85 s to 0.05 s. Objects made afterwards are
    collected as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


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


def setup_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr: pipelines at INFO (DEBUG with -vv, WARNING with -q), libraries at WARNING."""
    if verbose < 2:
        # Library deprecation chatter (MONAI argument defaults, optional GPU codecs) is not
        # something a user of the command can act on.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("pipelines").setLevel(level)
    if verbose > 1:
        root.setLevel(logging.INFO)


def add_path_policy_option(p: argparse.ArgumentParser) -> None:
    """``--allow-outside-paths``: the manifest path policy, for every command that reads a manifest."""
    p.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="accept manifest paths outside the manifest's folder (absolute paths, '..' above it, symbolic "
        "links leading out); without it such a manifest is refused before any file is opened",
    )


def add_case_options(p: argparse.ArgumentParser) -> None:
    """What to write and how to treat an input outside what the model handles: segment and batch."""
    p.add_argument(
        "--outputs",
        type=outputs_arg,
        default=None,
        help="comma list of labels,dicom-seg,stats,preview,mesh (default: labels,stats,preview; dicom-seg too for "
        "DICOM); mesh writes meshes/<label>_<name>.stl and .obj in LPS mm",
    )
    p.add_argument(
        "--nan-policy",
        choices=("refuse", "fill"),
        default="refuse",
        help="NaN or infinite voxels: refuse the input (default), or fill them with the image minimum "
        "(recorded in run.json)",
    )
    p.add_argument(
        "--allow-gaps",
        action="store_true",
        help="DICOM: interpolate across a gap between slices larger than 3x the median instead of refusing",
    )
    p.add_argument(
        "--tta",
        choices=("none", "flips", "full"),
        default=None,
        help="test-time augmentation: flips = the 8 mirrorings (8x the inference time), full = flips x in-plane "
        "90 degree turns (16x); probabilities averaged (default: the bundle's medseg_tta_default, else none)",
    )
    p.add_argument(
        "--mesh-smoothing",
        type=mesh_smoothing_arg,
        default=0,
        metavar="N",
        help="with --outputs mesh: N iterations of Taubin smoothing of each surface (0 = none, the default)",
    )
    p.add_argument(
        "--fail-on-flags",
        action="store_true",
        help="exit with status 1 when a case is QC-flagged (do not trust); its results are still written "
        "(default: exit 0 and print the FLAGGED summary); in a batch, flagged cases count as failed in the exit status",
    )
    p.add_argument(
        "--series-rules",
        type=Path,
        default=None,
        metavar="FILE",
        help="DICOM: JSON rules that choose the series (default: the bundle's medseg_series_rules, else the "
        "original CT series with the most slices, derived ones only when no original exists); --series-uid wins",
    )
    p.add_argument(
        "--channel-grids",
        choices=("refuse", "resample"),
        default="refuse",
        help="multi-channel bundles: a channel image on another voxel grid than the first is refused (default) or "
        "resampled onto the first image's grid (linear; logged and recorded in run.json)",
    )
    p.add_argument(
        "--keep-identifiers",
        action="store_true",
        help="allow patient identifiers (name, ID, birth date) in case ids; recorded in run.json",
    )


def mesh_smoothing_arg(text: str) -> int:
    """``--mesh-smoothing N``: a whole number of iterations, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of smoothing iterations >= 0, got {text!r}")
    return value


def series_rules_arg(path: Path | None) -> Any:
    """The :class:`~pipelines.io.series_rules.SeriesRules` of ``--series-rules FILE``, or None."""
    if path is None:
        return None
    from pipelines.io.series_rules import load_series_rules  # pydicom and jsonschema: only when asked

    return load_series_rules(path)


def case_option_values(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`add_case_options` and ``--override`` parsed, as keywords of ``SegmentOptions`` and ``BatchOptions``.

    One place, so ``medseg segment`` and ``medseg batch`` cannot pass a case option differently.
    """
    return {
        "outputs": args.outputs,
        "nan_policy": args.nan_policy,
        "allow_gaps": args.allow_gaps,
        "series_rules": series_rules_arg(args.series_rules),
        "keep_identifiers": args.keep_identifiers,
        "overrides": parse_overrides(getattr(args, "override", None)),
        "tta": args.tta,
        "channel_grids": args.channel_grids,
        "mesh_smoothing": args.mesh_smoothing,
    }
