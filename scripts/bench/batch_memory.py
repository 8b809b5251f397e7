#!/usr/bin/env python
"""Batch memory and throughput: does peak memory stay flat from 2 to N cases, and what does it gain?

Generates N synthetic CT phantoms, then measures, each in a fresh process:

* ``run_batch`` over the first 2 cases and over all N: peak resident memory (``ru_maxrss``) and
  cases per minute, so the ratio of the two peaks shows whether memory grows with the run;
* the same N cases done one by one with ``medseg segment`` subprocesses (start-up, bundle set-up
  and model load paid per case), for comparison.

    python scripts/bench/batch_memory.py                       # 20 cases of 96 x 80 x 48 voxels
    python scripts/bench/batch_memory.py -n 8 --output bench.json

Without ``--bundle`` the CT U-Net bundle of this repository is copied with random weights (speed
and memory do not depend on the weights). Set ``OMP_NUM_THREADS`` to fix the threads per process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _rss_mib(usage: resource.struct_rusage) -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    return usage.ru_maxrss / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


def _child(args: argparse.Namespace) -> int:
    """Run one batch in this process and print its figures as one JSON line."""
    from pipelines.batch.options import BatchOptions
    from pipelines.batch.run import run_batch

    start = time.perf_counter()
    summary = run_batch(
        args.manifest, args.bundle, args.out,
        BatchOptions(device=args.device, precision=args.precision, progress=False),
    )  # fmt: skip
    wall = time.perf_counter() - start
    figures = {
        "cases": summary.total,
        "ok": summary.ok,
        "failed": summary.failed,
        "wall_s": round(wall, 2),
        "cases_per_min": round(60.0 * summary.processed / wall, 2),
        "peak_rss_mib": round(_rss_mib(resource.getrusage(resource.RUSAGE_SELF)), 1),
    }
    print(json.dumps(figures))
    return 0


def _make_data(
    folder: Path, count: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> list[Path]:
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_nifti

    images = []
    for seed in range(count):
        image, _ = write_nifti(make_ct_phantom(seed, shape=shape, spacing_mm=spacing), folder / f"case_{seed:03d}")
        images.append(image)
    return images


def _manifest(path: Path, images: list[Path]) -> Path:
    from pipelines.data.manifests.model import write_manifest

    # paths relative to the manifest's folder: absolute ones are refused without --allow-outside-paths
    entries = [{"image": str(p.relative_to(path.parent)), "case_id": p.parent.name} for p in images]
    return write_manifest({"name": "bench", "modality": "CT", "labels": {"0": "background"}, "test": entries}, path)


def _random_weights_bundle(dest: Path) -> Path:
    """Copy the repository's CT U-Net bundle and give it randomly initialised weights."""
    import torch
    from monai.bundle import ConfigParser

    target = dest / "ct_abdomen_unet"
    shutil.copytree(REPO / "bundles" / "ct_abdomen_unet", target, ignore=shutil.ignore_patterns("*.pt", "*.ts", "eval"))
    parser = ConfigParser()
    parser.read_config(str(target / "configs" / "inference.json"))
    parser["bundle_root"] = str(target)
    torch.manual_seed(0)
    (target / "models").mkdir(exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), target / "models" / "model.pt")
    return target


def _batch_in_subprocess(manifest: Path, bundle: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--manifest", str(manifest),
               "--bundle", str(bundle), "--out", str(out),
               "--device", args.device, "--precision", args.precision]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"batch subprocess failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _segment_one_by_one(images: list[Path], bundle: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``medseg segment`` per case; must run before any other child (ru_maxrss of children is a max)."""
    start = time.perf_counter()
    for image in images:
        command = [sys.executable, "-m", "pipelines", "-q", "segment", str(image), "--bundle", str(bundle),
                   "--trust-bundle", "--output", str(out), "--case-id", image.parent.name,
                   "--device", args.device, "--precision", args.precision]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"medseg segment failed on {image} ({done.returncode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - start
    peak = _rss_mib(resource.getrusage(resource.RUSAGE_CHILDREN))
    return {
        "cases": len(images),
        "wall_s": round(wall, 2),
        "cases_per_min": round(60.0 * len(images) / wall, 2),
        "peak_rss_mib": round(peak, 1),  # the largest of the segment processes
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--cases", type=int, default=20, help="cases of the long run (default: 20)")
    parser.add_argument("--short", type=int, default=2, help="cases of the short run (default: 2)")
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 80, 48), metavar=("I", "J", "K"))
    parser.add_argument("--spacing-mm", type=float, nargs=3, default=(3.0, 3.0, 4.0), metavar=("SI", "SJ", "SK"))
    parser.add_argument("--bundle", type=Path, default=None, help="bundle (default: CT U-Net with random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and outputs here (default: temporary)")
    parser.add_argument("--no-segment", action="store_true", help="skip the one-by-one `medseg segment` comparison")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    if not 1 <= args.short < args.cases:
        parser.error(f"--short {args.short} and --cases {args.cases}: expected 1 <= short < cases")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medseg-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        tick = time.perf_counter()
        images = _make_data(workdir / "data", args.cases, tuple(args.shape), tuple(args.spacing_mm))
        print(f"{args.cases} phantoms of {tuple(args.shape)} voxels at {tuple(args.spacing_mm)} mm "
              f"in {time.perf_counter() - tick:.1f} s", file=sys.stderr)  # fmt: skip
        bundle = args.bundle or _random_weights_bundle(workdir / "bundles")
        runs: dict[str, dict[str, Any]] = {}
        if not args.no_segment:
            runs[f"segment_{args.cases}"] = _segment_one_by_one(images, bundle, workdir / "segment", args)
            print(f"segment one by one: {runs[f'segment_{args.cases}']}", file=sys.stderr)
        for count in (args.short, args.cases):
            manifest = _manifest(workdir / f"manifest_{count}.json", images[:count])
            shutil.rmtree(workdir / f"batch_{count}", ignore_errors=True)
            runs[f"batch_{count}"] = _batch_in_subprocess(manifest, bundle, workdir / f"batch_{count}", args)
            print(f"batch over {count}: {runs[f'batch_{count}']}", file=sys.stderr)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    short, long = runs[f"batch_{args.short}"], runs[f"batch_{args.cases}"]
    result = {
        "shape": list(args.shape),
        "spacing_mm": list(args.spacing_mm),
        "device": args.device,
        "precision": args.precision,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "runs": runs,
        "peak_rss_ratio": round(long["peak_rss_mib"] / short["peak_rss_mib"], 3),
    }
    if f"segment_{args.cases}" in runs:
        result["batch_speedup_over_segment"] = round(
            long["cases_per_min"] / runs[f"segment_{args.cases}"]["cases_per_min"], 2
        )
    print(f"{'run':<14} {'cases':>5} {'wall s':>8} {'cases/min':>10} {'peak RSS MiB':>13}")
    for name, figures in runs.items():
        print(f"{name:<14} {figures['cases']:>5} {figures['wall_s']:>8.1f} {figures['cases_per_min']:>10.1f} "
              f"{figures['peak_rss_mib']:>13.1f}")  # fmt: skip
    print(f"peak RSS ratio {args.cases} / {args.short} cases: {result['peak_rss_ratio']:.3f}")
    if "batch_speedup_over_segment" in result:
        print(f"batch throughput / one-by-one segment: {result['batch_speedup_over_segment']:.2f}x")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
