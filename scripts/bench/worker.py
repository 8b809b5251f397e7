#!/usr/bin/env python
"""One timed run of one pipeline on one input, in a fresh process; prints a JSON record.

Used by ``inference_vs_reference.py``; a process per run keeps peak-RSS figures independent.

    python scripts/bench/worker.py --pipeline ours|reference --input PATH --bundle DIR --output DIR
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _WindowCounter:
    """Forward pre-hook counting the windows the network sees."""

    def __init__(self) -> None:
        self.windows = 0
        self.voxels = 0

    def __call__(self, module, inputs):
        self.windows += int(inputs[0].shape[0])
        self.voxels += int(inputs[0].shape[0]) * int(inputs[0][0, 0].numel())


def run_ours(args: argparse.Namespace) -> dict:
    from pipelines.cli.common import heavy_imports

    with heavy_imports():  # as `medseg segment` imports them
        from pipelines.bundles.overrides import parse_overrides
        from pipelines.segment import Segmenter, SegmentOptions

    options = SegmentOptions(
        device=args.device,
        precision=args.precision,
        outputs=tuple(args.outputs.split(",")),
        overrides=parse_overrides(args.override),
    )
    segmenter = Segmenter(args.bundle, options)
    counter = _WindowCounter()
    segmenter.predictor.network.register_forward_pre_hook(counter)
    start = time.perf_counter()
    result = segmenter.run(args.input, args.output, case_id="ours")
    total = time.perf_counter() - start
    return {
        "seconds": {**result.seconds, "total": total},
        "labels": str(result.files["labels"]),
        "precision": segmenter.precision,
        "windows": counter.windows,
        "window_voxels": counter.voxels,
    }


def run_reference(args: argparse.Namespace) -> dict:
    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigParser
    from monai.engines import IterationEvents
    from monai.transforms import LoadImaged, SaveImaged

    # Time the loader and the writer inside the evaluator by wrapping their calls.
    spent = {"load": 0.0, "save": 0.0}

    def timed(cls, key):
        original = cls.__call__

        def wrapper(self, *a, **k):
            t = time.perf_counter()
            try:
                return original(self, *a, **k)
            finally:
                spent[key] += time.perf_counter() - t

        cls.__call__ = wrapper

    timed(LoadImaged, "load")
    timed(SaveImaged, "save")
    parser = ConfigParser()
    parser.read_config(str(HERE / "reference_inference.json"))
    parser["bundle_root"] = str(Path(args.bundle).resolve())
    parser["datalist"] = [str(args.input)]
    parser["output_dir"] = str(args.output)
    device = args.device if args.device != "auto" else ("cuda:0" if torch.cuda.is_available() else "cpu")
    parser["device"] = f"$torch.device('{device}')"
    evaluator = parser.get_parsed_content("evaluator")
    counter = _WindowCounter()
    parser.get_parsed_content("network").register_forward_pre_hook(counter)
    marks: dict[str, float] = {}
    evaluator.add_event_handler(Events.GET_BATCH_STARTED, lambda e: marks.__setitem__("fetch0", time.perf_counter()))
    evaluator.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: marks.__setitem__("fetch1", time.perf_counter()))
    evaluator.add_event_handler(
        IterationEvents.FORWARD_COMPLETED, lambda e: marks.__setitem__("fwd", time.perf_counter())
    )
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: marks.__setitem__("done", time.perf_counter()))
    start = time.perf_counter()
    parser.get_parsed_content("initialize")
    evaluator.run()
    total = time.perf_counter() - start
    fetch = marks["fetch1"] - marks["fetch0"]
    seconds = {
        "load": spent["load"],
        "preprocess": fetch - spent["load"],
        "infer": marks["fwd"] - marks["fetch1"],
        "postprocess": marks["done"] - marks["fwd"] - spent["save"],
        "save": spent["save"],
        "total": total,
    }
    stem = Path(args.input).name.split(".")[0] if Path(args.input).is_file() else Path(args.input).name
    saved = next(Path(args.output).glob(f"{stem}*_seg.nii.gz"), None) or next(Path(args.output).rglob("*_seg.nii.gz"))
    return {
        "seconds": seconds,
        "labels": str(saved),
        "precision": "fp32",
        "windows": counter.windows,
        "window_voxels": counter.voxels,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=("ours", "reference"), required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--outputs", default="labels")
    parser.add_argument("--override", action="append", default=[], help="KEY=VALUE for our pipeline's bundle config")
    args = parser.parse_args()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    record = run_ours(args) if args.pipeline == "ours" else run_reference(args)
    record["peak_rss_mb"] = _peak_rss_mb()
    record["pipeline"] = args.pipeline
    json.dump(record, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
