"""The ``medseg`` command line: parse, set up logging, call the library, report.

Every subcommand is a thin wrapper around a typed library function. Errors a person can act on
(bad input, missing weights, a bundle that does not fit) end with one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from pipelines import __version__

logger = logging.getLogger("pipelines")

EXIT_ERROR = 1


def _setup_logging(verbose: int, quiet: bool) -> None:
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


def _outputs(value: str) -> tuple[str, ...]:
    from pipelines.segment import OUTPUTS

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown output(s) {', '.join(unknown)}; choose from {', '.join(OUTPUTS)}")
    return names


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="compute precision; auto = bf16 where the hardware runs it fast, else fp32 (default: auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for libraries too)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("segment", help="segment one scan (NIfTI, NRRD, MHA or a DICOM folder) with a bundle")
    p.add_argument("input", type=Path, help="image file or DICOM folder")
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder (MONAI Model Zoo layout)")
    p.add_argument("--output", "-o", type=Path, required=True, help="output folder; results go to OUTPUT/<case-id>/")
    p.add_argument("--case-id", help="name of the case folder (default: input name without extension)")
    p.add_argument("--series-uid", help="DICOM folder with several series: the SeriesInstanceUID to read")
    p.add_argument(
        "--outputs",
        type=_outputs,
        default=None,
        help="comma list of labels,dicom-seg,stats,preview (default: labels,stats,preview; dicom-seg too for DICOM)",
    )
    _add_run_options(p)
    p.set_defaults(func=_cmd_segment)
    return parser


def _cmd_segment(args: argparse.Namespace) -> int:
    from pipelines.segment import SegmentOptions, segment_case

    options = SegmentOptions(
        device=args.device, precision=args.precision, outputs=args.outputs, series_uid=args.series_uid
    )
    result = segment_case(args.input, args.bundle, args.output, case_id=args.case_id, options=options)
    _print_stats(result.stats)
    total = sum(result.seconds.values())
    print(f"wrote {result.case_dir} ({', '.join(sorted(p.name for p in result.files.values()))}) in {total:.1f} s")
    return 0


def _print_stats(stats: Sequence[dict]) -> None:
    if not stats:
        return
    width = max(len("structure"), *(len(s["name"]) for s in stats))
    print(f"{'structure':<{width}}  {'volume mL':>10}  {'mean':>8}")
    for s in stats:
        print(f"{s['name']:<{width}}  {s['volume_ml']:>10.1f}  {s['mean']:>8.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TypeError, NotADirectoryError, IsADirectoryError) as err:
        logger.debug("error details", exc_info=True)
        print(f"medseg: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
