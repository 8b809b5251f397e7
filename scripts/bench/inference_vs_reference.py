#!/usr/bin/env python
"""End-to-end inference benchmark: medseg segment against the Model Zoo style reference pipeline.

Both pipelines run the same network and weights (the CT U-Net bundle's ``models/model.pt``) on
the same inputs, each run in a fresh process, alternating reference and ours. Reported per input:
median seconds per stage, in total and for the whole process (interpreter start and imports
included), median peak RSS, the network's achieved GFLOP/s (from the voxels of the windows it saw)
against this machine's measured fp32 and bf16 matrix-multiply peaks, Dice per label between our
label map and the reference's own argmax map, and, on the phantoms, Dice of both maps against the
phantom's truth. The CPU model, its matrix units and the load average are recorded with them.

    python scripts/bench/inference_vs_reference.py                  # all inputs, 3 runs each
    python scripts/bench/inference_vs_reference.py --runs 5 --inputs phantom_nifti shared_ct

Inputs: ``phantom_nifti`` / ``phantom_dicom`` (a generated 512x512x200 CT at 0.8x0.8x2 mm, as NIfTI
and as a DICOM series) and ``shared_ct`` (``../shared/data/ct_abdomen_3mm``). Results are written
as JSON (``--json``, default ``bench_out/inference_vs_reference.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "worker.py"
STAGES = ("load", "preprocess", "infer", "postprocess", "save", "total", "process")


def matmul_peak_gflops(dtype_name: str, size: int = 2048, repeats: int = 5) -> float:
    """Best-of-N GFLOP/s of a square matrix product on the CPU (or the GPU when ``device`` is cuda)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    device = "cuda" if os.environ.get("BENCH_DEVICE", "cpu").startswith("cuda") else "cpu"
    if device == "cuda":
        size = 8192
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def network_gflop_per_window(bundle: Path) -> float:
    """FLOPs of one forward pass of the bundle's network on one 96³ window, in GFLOP (per-voxel cost x 96³)."""
    import torch
    from monai.bundle import ConfigParser
    from torch.utils.flop_counter import FlopCounterMode

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def").eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.zeros(1, 1, 96, 96, 96))
    return counter.get_total_flops() / 1e9


def cpu_model() -> dict:
    """CPU model name and the matrix units that decide bf16 speed (from /proc/cpuinfo on Linux)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    units = [f for f in ("amx_tile", "amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return {"model": name, "units": units, "kind": cpu_kind(name, flags)}


def cpu_kind(name: str, flags: set[str]) -> str:
    """A short file-name-safe label of the CPU kind, e.g. ``intel-xeon-avx512bf16`` or ``amd-epyc-amx``."""
    vendor = "intel-xeon" if "Xeon" in name else "amd-epyc" if "EPYC" in name else name.split()[0].lower()
    unit = "amx" if "amx_bf16" in flags else "avx512bf16" if "avx512_bf16" in flags else "fp32only"
    return f"{vendor}-{unit}"


def make_inputs(work: Path, names: list[str], shared: Path) -> dict[str, Path]:
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_dicom_series, write_nifti

    inputs: dict[str, Path] = {}
    big = None
    if {"phantom_nifti", "phantom_dicom"} & set(names):
        nifti = work / "phantom512" / "image.nii.gz"
        dicom = work / "phantom512_dicom"
        if not nifti.is_file() or ("phantom_dicom" in names and not dicom.is_dir()):
            big = make_ct_phantom(95_000, shape=(512, 512, 200), spacing_mm=(0.8, 0.8, 2.0), orientation="LPS")
            write_nifti(big, nifti.parent)
            if "phantom_dicom" in names:
                write_dicom_series(big, dicom, overwrite=True)
        if "phantom_nifti" in names:
            inputs["phantom_nifti"] = nifti
        if "phantom_dicom" in names:
            inputs["phantom_dicom"] = dicom
    if "shared_ct" in names:
        path = shared / "ct_abdomen_3mm" / "image.nii.gz"
        if path.is_file():
            inputs["shared_ct"] = path
        else:
            print(f"skipping shared_ct: {path} not found", file=sys.stderr)
    return inputs


def _timed_process(command: list[str], threads: int | None, what: str) -> tuple[float, str]:
    """Run ``command`` in a fresh process; its wall seconds (start to exit) and its stdout."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def run_worker(
    pipeline: str,
    source: Path,
    bundle: Path,
    out: Path,
    device: str,
    threads: int | None,
    extra: list[str] | None = None,
) -> dict:
    command = [
        sys.executable,
        str(WORKER),
        "--pipeline",
        pipeline,
        "--input",
        str(source),
        "--bundle",
        str(bundle),
        "--output",
        str(out),
        "--device",
        device,
        *(extra or []),
    ]
    wall, stdout = _timed_process(command, threads, f"{pipeline} on {source}")
    record = json.loads(stdout.strip().splitlines()[-1])
    # The whole process, interpreter start and imports included (issue #14 counts these).
    record["seconds"]["process"] = wall
    return record


def run_cli(source: Path, bundle: Path, out: Path, device: str, threads: int | None) -> float:
    """Wall seconds of one ``medseg segment --outputs labels`` process: the command a user runs, start to exit."""
    medseg = Path(sys.executable).with_name("medseg")
    command = [str(medseg), "--quiet", "segment", str(source), "--bundle", str(bundle), "--output", str(out)]
    command += ["--outputs", "labels", "--device", device]
    return _timed_process(command, threads, f"medseg segment on {source}")[0]


def dice_per_label(ours: Path, reference: Path) -> dict[str, float]:
    import nibabel as nib
    import numpy as np

    a = np.asarray(nib.load(ours).dataobj).astype(np.int32)
    b = np.rint(np.asarray(nib.load(reference).dataobj)).astype(np.int32)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: ours {a.shape}, reference {b.shape}")
    result = {}
    for label in sorted(set(np.unique(a)) | set(np.unique(b))):
        if label == 0:
            continue
        x, y = a == label, b == label
        denom = x.sum() + y.sum()
        result[str(label)] = float(2 * np.logical_and(x, y).sum() / denom) if denom else 1.0
    return result


def truth_in_bundle_classes(truth: Path, bundle: Path, target: Path) -> Path:
    """The phantom's truth (default CT label scheme) relabelled to the bundle's output classes.

    Structures are matched by name (the bundle's ``channel_def`` against ``CT_STRUCTURES``); the
    phantom's structures the bundle does not segment become background. Written once to ``target``.
    """
    import nibabel as nib
    import numpy as np

    from pipelines.data.phantoms.tissues import CT_STRUCTURES

    if target.is_file() and target.stat().st_mtime >= truth.stat().st_mtime:
        return target
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    classes = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    lut = np.zeros(256, np.uint8)
    for out_id, name in classes.items():
        if name in CT_STRUCTURES:
            lut[CT_STRUCTURES[name]] = int(out_id)
    image = nib.load(truth)
    labels = lut[np.asarray(image.dataobj).astype(np.uint8)]
    nib.save(nib.Nifti1Image(labels, image.affine), target)
    return target


def reference_with_our_cleanup(reference: Path, bundle: Path, target: Path) -> Path:
    """The reference's label map after the island steps of our bundle's postprocessing.

    Separates two sources of disagreement: the inference and resampling path (what this benchmark
    is about) and the small-island clean-up the reference pipeline does not have.
    """
    import nibabel as nib
    import numpy as np
    import torch
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    from pipelines.transforms import KeepLargestComponentd, RemoveSmallIslandsd

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    steps = [
        t
        for t in parser.get_parsed_content("postprocessing").transforms
        if isinstance(t, RemoveSmallIslandsd | KeepLargestComponentd)
    ]
    image = nib.load(reference)
    labels = np.rint(np.asarray(image.dataobj)).astype(np.uint8)
    data = {"pred": MetaTensor(torch.as_tensor(labels[None]), affine=torch.as_tensor(image.affine))}
    for step in steps:
        data = step(data)
    nib.save(nib.Nifti1Image(np.asarray(data["pred"][0]).astype(np.uint8), image.affine), target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "ct_abdomen_unet")
    parser.add_argument("--inputs", nargs="+", default=["phantom_nifti", "phantom_dicom", "shared_ct"])
    parser.add_argument("--runs", type=int, default=3, help="runs per pipeline and input (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the workers")
    parser.add_argument("--work", type=Path, default=REPO / "bench_out")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ["BENCH_DEVICE"] = args.device
    args.work.mkdir(parents=True, exist_ok=True)

    import torch

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "peak_gflops": {"fp32": matmul_peak_gflops("fp32"), "bf16": matmul_peak_gflops("bf16")},
        "torch": torch.__version__,
    }
    gflop_window = network_gflop_per_window(args.bundle)
    inputs = make_inputs(args.work / "inputs", args.inputs, args.shared)
    report: dict = {"machine": machine, "gflop_per_window": gflop_window, "runs": args.runs, "inputs": {}}
    for name, source in inputs.items():
        runs: dict[str, list[dict]] = {"reference": [], "ours": []}
        cli_seconds: list[float] = []
        for i in range(args.runs):
            for pipeline in ("reference", "ours"):
                out = args.work / "runs" / name / f"{pipeline}{i}"
                shutil.rmtree(out, ignore_errors=True)
                record = run_worker(pipeline, source, args.bundle, out, args.device, args.threads)
                runs[pipeline].append(record)
                print(
                    f"{name} {pipeline} run {i + 1}: {record['seconds']['total']:.1f} s, "
                    f"{record['peak_rss_mb']:.0f} MB",
                    file=sys.stderr,
                )
            out = args.work / "runs" / name / f"cli{i}"
            shutil.rmtree(out, ignore_errors=True)
            cli_seconds.append(run_cli(source, args.bundle, out, args.device, args.threads))
            print(f"{name} medseg segment run {i + 1}: {cli_seconds[-1]:.1f} s (whole process)", file=sys.stderr)
        summary = {}
        for pipeline, records in runs.items():
            seconds = {s: statistics.median(r["seconds"][s] for r in records) for s in STAGES}
            windows = records[0]["windows"]
            voxels = records[0].get("window_voxels") or windows * 96**3
            summary[pipeline] = {
                "seconds": seconds,
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in records),
                "precision": records[0]["precision"],
                "windows": windows,
                "window_voxels": voxels,
                # the network is fully convolutional: FLOPs scale with the voxels of the windows it sees
                "network_gflops": voxels / 96**3 * gflop_window / seconds["infer"],
            }
        cli_median = statistics.median(cli_seconds)
        ours_labels, ref_labels = Path(runs["ours"][-1]["labels"]), Path(runs["reference"][-1]["labels"])
        dice = dice_per_label(ours_labels, ref_labels)
        cleaned = reference_with_our_cleanup(
            ref_labels, args.bundle, args.work / "runs" / name / "reference_cleaned.nii.gz"
        )
        dice_cleaned = dice_per_label(ours_labels, cleaned)
        truth = source.parent / "label.nii.gz" if source.is_file() else source.parent / "phantom512" / "label.nii.gz"
        if name.startswith("phantom") and truth.is_file():
            truth = truth_in_bundle_classes(truth, args.bundle, truth.with_name("truth_classes.nii.gz"))
            truth_dice = {"reference": dice_per_label(ref_labels, truth), "ours": dice_per_label(ours_labels, truth)}
        else:
            truth_dice = None
        report["inputs"][name] = {
            "path": os.path.relpath(source, REPO),
            **summary,
            "speedup_total": summary["reference"]["seconds"]["total"] / summary["ours"]["seconds"]["total"],
            "rss_ratio": summary["ours"]["peak_rss_mb"] / summary["reference"]["peak_rss_mb"],
            "dice_agreement": dice,
            "min_dice_agreement": min(dice.values()) if dice else 1.0,
            "dice_agreement_same_cleanup": dice_cleaned,
            "min_dice_agreement_same_cleanup": min(dice_cleaned.values()) if dice_cleaned else 1.0,
            "speedup_process": summary["reference"]["seconds"]["process"] / summary["ours"]["seconds"]["process"],
            # the real command, start to exit (the worker above times the same library calls stage by stage)
            "medseg_segment_process_seconds": cli_median,
            "speedup_medseg_segment_process": summary["reference"]["seconds"]["process"] / cli_median,
            "dice_truth": truth_dice,
            "mean_dice_truth": {k: statistics.fmean(v.values()) for k, v in truth_dice.items()} if truth_dice else None,
        }
    report["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    print_table(report)
    target = args.json or args.work / "inference_vs_reference.json"
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {target}")
    return 0


def print_table(report: dict) -> None:
    peak = report["machine"]["peak_gflops"]
    print(
        f"machine: {report['machine']['cpu']['model']} ({', '.join(report['machine']['cpu']['units'])}), "
        f"{report['machine']['cpu_count']} cores, load average {report['machine']['load_average_1min_at_start']:.1f}, "
        f"device {report['machine']['device']}; "
        f"matmul peak fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s"
    )
    print(f"network: {report['gflop_per_window']:.1f} GFLOP per 96^3 window; medians of {report['runs']} runs\n")
    header = (
        f"{'input':<14} {'pipeline':<10} "
        + " ".join(f"{s:>11}" for s in STAGES)
        + f" {'peak MB':>8} {'win':>4} {'GFLOP/s':>8}"
    )
    print(header)
    for name, entry in report["inputs"].items():
        for pipeline in ("reference", "ours"):
            e = entry[pipeline]
            stages = " ".join(f"{e['seconds'][s]:>11.2f}" for s in STAGES)
            figures = f"{e['peak_rss_mb']:>8.0f} {e['windows']:>4} {e['network_gflops']:>8.0f}"
            print(f"{name:<14} {pipeline:<10} {stages} {figures}")
        print(
            f"{'':<14} speed-up {entry['speedup_total']:.2f}x (whole process {entry['speedup_process']:.2f}x; "
            f"medseg segment {entry['medseg_segment_process_seconds']:.2f} s, "
            f"{entry['speedup_medseg_segment_process']:.2f}x), "
            f"peak RSS ratio {entry['rss_ratio']:.2f}, "
            f"min Dice agreement {entry['min_dice_agreement']:.4f}, with our island clean-up applied to the "
            f"reference too {entry['min_dice_agreement_same_cleanup']:.4f}\n{'':<14} per label: "
            + ", ".join(f"{k}: {v:.4f}" for k, v in entry["dice_agreement"].items())
        )
        if entry["dice_truth"]:
            print(
                f"{'':<14} Dice against the phantom's truth, mean: reference "
                f"{entry['mean_dice_truth']['reference']:.4f}, ours {entry['mean_dice_truth']['ours']:.4f}; "
                "per label ours: " + ", ".join(f"{k}: {v:.4f}" for k, v in entry["dice_truth"]["ours"].items())
            )


if __name__ == "__main__":
    sys.exit(main())
