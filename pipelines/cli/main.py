"""The ``medseg`` command line: parse, set up logging, call the library, report.

Every subcommand is a thin wrapper around a typed library function. Errors a person can act on
(bad input, missing weights, a bundle that does not fit) end with one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines import __version__
from pipelines.bundles.find import find_bundle
from pipelines.cli.batch import add_batch_parser
from pipelines.cli.bundle import (
    add_bundle_option,
    add_bundle_parser,
    add_override_option,
    bundle_search_path,
    resolve_bundle_args,
)
from pipelines.cli.common import (
    add_case_options,
    add_path_policy_option,
    add_run_options,
    case_option_values,
    heavy_imports,
    setup_logging,
)
from pipelines.cli.dicom import (
    add_dicom_parser,
    add_id_key_option,
    add_manifest_dicom_options,
    cmd_manifest_create_dicom,
    several_patients_message,
)
from pipelines.cli.quality import print_case_summary
from pipelines.cli.serve import add_serve_parser

logger = logging.getLogger("pipelines")

EXIT_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for libraries too)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("segment", help="segment one scan (NIfTI, NRRD, MHA or a DICOM folder) with a bundle")
    p.add_argument("input", type=Path, nargs="?", help="image file or DICOM folder (multi-channel: a case folder)")
    p.add_argument(
        "--image",
        action="append",
        metavar="[NAME=]PATH",
        help="multi-channel bundles: one image per channel, repeated; NAME=PATH checks NAME against the bundle's "
        "channel_def and puts the images in its order, plain paths are taken in channel order",
    )
    add_bundle_option(p, required=True)
    add_override_option(p)
    p.add_argument("--output", "-o", type=Path, required=True, help="output folder; results go to OUTPUT/<case-id>/")
    p.add_argument("--case-id", help="name of the case folder (default: input name without extension)")
    p.add_argument("--series-uid", help="DICOM folder with several series: the SeriesInstanceUID to read")
    add_case_options(p)
    add_id_key_option(p)  # names the patients of a refused multi-patient export as 'medseg dicom ls' does
    add_run_options(p)
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("demo", help="generate a CT phantom, segment it with the shipped CT bundle, score it")
    p.add_argument("--output", "-o", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    add_bundle_option(p, default="ct_abdomen_unet")
    p.add_argument("--seed", type=int, default=None, help="phantom seed (default: the first demo seed)")
    add_run_options(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("phantoms", help="generate a CT phantom dataset with a manifest, labelled for a bundle")
    p.add_argument("--output", "-o", type=Path, required=True, help="dataset folder (manifest goes inside)")
    add_bundle_option(p, default="ct_abdomen_unet", help="bundle whose labels to use: folder or name")
    p.add_argument("--training", type=int, default=24)
    p.add_argument("--validation", type=int, default=4)
    p.add_argument("--test", type=int, default=10)
    p.set_defaults(func=_cmd_phantoms)

    p = sub.add_parser(
        "train",
        help="train a bundle on a manifest (under torchrun: data-parallel with multi_gpu_train.json)",
        description="Train a bundle with its configs/train.json. Data-parallel: "
        "torchrun --nproc_per_node N -m pipelines train --bundle DIR --manifest FILE "
        "(one GPU per process; gloo on CPU); configs/multi_gpu_train.json is layered automatically.",
    )
    add_bundle_option(p, required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--val-interval", type=int, default=None, help="epochs between validations")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from the newest models/last_checkpoint_*.pt")
    p.add_argument("--device", default="auto")
    add_path_policy_option(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a bundle on a manifest split (Dice, HD95, ASD in mm)")
    add_bundle_option(p, required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--output", "-o", type=Path, required=True)
    p.add_argument("--split", default="test", choices=("training", "validation", "test", "all"))
    p.add_argument("--device", default="auto")
    add_path_policy_option(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("metrics", help="Dice, HD95 and ASD (mm) between a predicted and a reference label map")
    p.add_argument("pred", type=Path)
    p.add_argument("label", type=Path)
    p.add_argument("--labels", type=Path, default=None, help="JSON {id: name} (or a bundle folder); default: ids found")
    p.add_argument("--output", "-o", type=Path, default=None, help="folder for metrics.csv / metrics.json")
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser("manifest", help="validate, create or split data manifests")
    msub = p.add_subparsers(dest="manifest_command", required=True, metavar="ACTION")
    q = msub.add_parser("validate", help="report every problem of a manifest at once")
    q.add_argument("file", type=Path)
    add_path_policy_option(q)
    q.set_defaults(func=_cmd_manifest_validate)
    q = msub.add_parser("create", help="build a manifest from a folder of image/label pairs, or a DICOM export")
    q.add_argument("folder", type=Path, nargs="?", help="data folder (or give --dicom PATH)")
    q.add_argument("--output", "-o", type=Path, default=None, help="manifest file (default: FOLDER/dataset.json)")
    q.add_argument("--name", default=None)
    q.add_argument("--modality", default="CT")
    add_manifest_dicom_options(q)
    q.set_defaults(func=_cmd_manifest_create)
    q = msub.add_parser("split", help="write k-fold splits beside the manifest")
    q.add_argument("file", type=Path)
    q.add_argument("--folds", type=int, required=True)
    q.add_argument("--seed", type=int, default=0)
    add_path_policy_option(q)
    q.set_defaults(func=_cmd_manifest_split)

    add_batch_parser(sub)
    add_bundle_parser(sub)
    add_dicom_parser(sub)
    add_serve_parser(sub)
    return parser


def _cmd_segment(args: argparse.Namespace) -> int:
    with heavy_imports():
        from pipelines.segment import SegmentOptions, segment_case

    if (args.input is None) == (not args.image):
        raise ValueError("segment: give the input image (or case folder) or one --image per channel, not both")
    options = SegmentOptions(
        device=args.device,
        precision=args.precision,
        series_uid=args.series_uid,
        **case_option_values(args),
    )
    from pipelines.io.series_rules import SeveralPatientsError

    try:
        result = segment_case(args.input or args.image, args.bundle, args.output, case_id=args.case_id, options=options)
    except SeveralPatientsError as err:  # a whole export: list its patients by pseudonym and how to choose
        raise ValueError(several_patients_message(err, args.id_key)) from err
    print_case_summary(result.stats, result.quality)  # with the QC verdict: a flagged case says so
    total = sum(result.seconds.values())
    names = sorted({p.relative_to(result.case_dir).parts[0] for p in result.files.values()})
    print(f"wrote {result.case_dir} ({', '.join(names)}) in {total:.1f} s")
    if args.fail_on_flags and result.quality and result.quality.get("flagged"):
        print("medseg: QC flagged this case (--fail-on-flags): exit status 1, results written", file=sys.stderr)
        return 1
    return 0


def _default_bundle() -> Path:
    """The CT U-Net bundle ``ct_abdomen_unet``, found on the bundle search path."""
    return find_bundle("ct_abdomen_unet", bundle_search_path())


def _cmd_demo(args: argparse.Namespace) -> int:
    with heavy_imports():
        from pipelines.data.datasets import SEEDS
        from pipelines.demo import run_demo

    bundle = args.bundle or _default_bundle()
    seed = args.seed if args.seed is not None else SEEDS["demo"][0]
    result = run_demo(args.output, bundle, seed=seed, device=args.device, precision=args.precision)
    width = max(len("mean (organs)"), *(len(k) for k in result.dice))
    print(f"{'structure':<{width}}  dice")
    for name, value in result.dice.items():
        print(f"{name:<{width}}  {value:.3f}")
    print(f"{'mean (organs)':<{width}}  {result.mean_dice:.3f}")
    print(f"wrote {result.output} (phantom/, {result.case_dir.name}/, metrics.json)")
    return 0


def _cmd_phantoms(args: argparse.Namespace) -> int:
    from pipelines.data.datasets import make_ct_dataset

    counts = {"training": args.training, "validation": args.validation, "test": args.test}
    manifest = make_ct_dataset(args.output, args.bundle or _default_bundle(), counts=counts)
    print(f"wrote {sum(counts.values())} phantoms and {manifest}")
    return 0


def _distributed_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun, else None."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def _cmd_train(args: argparse.Namespace) -> int:
    from pipelines.train import TrainOptions, train

    env = _distributed_env()
    options = TrainOptions(
        max_epochs=args.max_epochs,
        val_interval=args.val_interval,
        resume=args.resume,
        device=args.device,
        seed=args.seed,
        distributed=env is not None,
        world_size=env[1] if env else 1,
        allow_outside_paths=args.allow_outside_paths,
    )
    result = train(args.bundle, args.manifest, options)
    print(
        f"best validation mean Dice {result.best_metric:.4f} at epoch {result.best_epoch} "
        f"after {result.epochs} epochs; weights: {result.weights}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pipelines.train import evaluate

    summary = evaluate(
        args.bundle,
        args.manifest,
        output=args.output,
        split=args.split,
        device=args.device,
        allow_outside_paths=args.allow_outside_paths,
    )
    _print_metric_means(summary["mean"])
    print(f"wrote {args.output / 'metrics.csv'} and {args.output / 'metrics.json'}")
    return 0


def _print_metric_means(mean: dict) -> None:
    width = max(len("structure"), *(len(k) for k in mean)) if mean else len("structure")
    print(f"{'structure':<{width}}  {'dice':>6}  {'hd95 mm':>8}  {'asd mm':>7}")
    for name, m in mean.items():
        print(f"{name:<{width}}  {m['dice']:>6.3f}  {m['hd95_mm']:>8.2f}  {m['asd_mm']:>7.2f}")


def _cmd_metrics(args: argparse.Namespace) -> int:
    import numpy as np

    from pipelines.io.readers import read_volume
    from pipelines.metrics import metrics_for_files, summarize, write_metrics

    if args.labels is None:
        found = np.unique(read_volume(args.label).array)
        labels = {int(v): f"label_{int(v)}" for v in found if v != 0}
    elif args.labels.is_dir():
        from pipelines.bundles.bundle import load_bundle

        labels = {k: v for k, v in load_bundle(args.labels).labels.items() if k != 0}
    else:
        try:
            labels = {int(k): str(v) for k, v in json.loads(args.labels.read_text()).items() if int(k) != 0}
        except (json.JSONDecodeError, ValueError) as err:
            raise ValueError(f"{args.labels}: expected a JSON object of label id -> name ({err})") from err
    per_case = {args.pred.name: metrics_for_files(args.pred, args.label, labels=labels)}
    _print_metric_means(summarize(per_case))
    if args.output:
        csv_path, json_path = write_metrics(per_case, args.output)
        print(f"wrote {csv_path} and {json_path}")
    return 0


def _cmd_manifest_validate(args: argparse.Namespace) -> int:
    from pipelines.data.manifests.validate import validate_manifest

    if not args.file.is_file():
        raise FileNotFoundError(f"{args.file}: manifest does not exist")
    problems = validate_manifest(args.file, allow_outside_paths=args.allow_outside_paths)
    for problem in problems:
        print(problem)
    print(f"{args.file}: {len(problems)} problem(s)" if problems else f"{args.file}: OK")
    return EXIT_ERROR if problems else 0


def _cmd_manifest_create(args: argparse.Namespace) -> int:
    from pipelines.data.manifests.create import create_manifest
    from pipelines.data.manifests.model import write_manifest

    if args.dicom is not None:
        return cmd_manifest_create_dicom(args)
    if args.folder is None:
        raise ValueError("manifest create: give a data folder, or --dicom PATH for a DICOM export")
    target = args.output or args.folder / "dataset.json"
    manifest = create_manifest(args.folder, name=args.name, modality=args.modality, manifest_dir=target.parent)
    path = write_manifest(manifest, target)
    counts = ", ".join(f"{len(manifest.get(k, []))} {k}" for k in ("training", "validation", "test"))
    print(f"wrote {path} ({counts})")
    return 0


def _cmd_manifest_split(args: argparse.Namespace) -> int:
    from pipelines.data.manifests.model import write_manifest
    from pipelines.data.manifests.split import split_manifest

    stem = args.file.name.removesuffix(".json")
    for fold, manifest in enumerate(
        split_manifest(args.file, folds=args.folds, seed=args.seed, allow_outside_paths=args.allow_outside_paths)
    ):
        path = write_manifest(manifest, args.file.with_name(f"{stem}_fold{fold}.json"))
        print(f"wrote {path} ({len(manifest['training'])} training, {len(manifest['validation'])} validation)")
    return 0


def _one_line(err: BaseException) -> str:
    """The message of an error on one line; an OSError built from (errno, text) shows only the text."""
    if isinstance(err, OSError) and err.strerror and not err.filename and len(err.args) == 2:
        text = err.strerror
    else:
        text = str(err)
    return " ".join(text.split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(resolve_bundle_args(args)) or 0)
    except (ValueError, TypeError, OSError) as err:
        # OSError covers missing files, permissions, full disks, files where folders belong.
        logger.debug("error details", exc_info=True)
        print(f"medseg: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
