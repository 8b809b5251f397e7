#!/usr/bin/env python
"""One CT inference through the MONAI Label server vs ``medseg segment``, on the same phantom.

Writes the demo CT phantom (the shipped CT bundle's size, 192 x 160 x 96 voxels at 1.5 x 1.5 x
2 mm) as NIfTI into a temporary studies folder, starts ``medseg serve`` on a free loopback port
with the shipped ``bundles/ct_abdomen_unet`` on the CPU, asks for one warm-up inference and then
``--repeats`` timed ones with MONAI Label's own client (request to label file on disk), and runs
``medseg segment`` ``--repeats`` times on the same file (the whole command: process start, bundle
load, inference, writing). Prints the CPU model and the medians; the server is stopped by its PID.

Run it with the label environment's Python (MONAI Label's client and ``medseg serve`` live there):

    .venv-label/bin/python scripts/bench/label_server.py            # about 3.5 min on 2 shared cores
    .venv-label/bin/python scripts/bench/label_server.py --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from machine import cpu_model  # scripts/bench/machine.py, beside this script

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ct_abdomen_unet"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"medseg serve exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"medseg serve not up after {timeout_s} s: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats: expected at least 1")
    medseg = Path(sys.executable).with_name("medseg")
    if not Path(sys.executable).with_name("monailabel").is_file():
        raise SystemExit(f"{sys.executable}: no MONAI Label here; run with .venv-label/bin/python")

    import nibabel as nib
    from monailabel.client import MONAILabelClient

    from pipelines.bundles.bundle import load_bundle
    from pipelines.data.datasets import SEEDS, bundle_label_ids
    from pipelines.data.phantoms.make import make_ct_phantom

    with tempfile.TemporaryDirectory(prefix="medseg-label-bench-") as tmp:
        root = Path(tmp)
        studies = root / "studies"
        studies.mkdir()
        ct = make_ct_phantom(SEEDS["demo"][0], label_ids=bundle_label_ids(load_bundle(BUNDLE)))
        image = studies / "ct_0.nii.gz"
        nib.save(nib.Nifti1Image(ct.image, ct.affine), image)
        env = {**os.environ, "MEDSEG_TRUST_FILE": str(root / "trusted.json"), "XDG_CACHE_HOME": str(root / "cache")}

        segment_s = []
        for i in range(args.repeats):
            command = [str(medseg), "segment", str(image), "--bundle", str(BUNDLE), "--device", "cpu"]
            command += ["--output", str(root / f"segment_{i}")]
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
            segment_s.append(time.perf_counter() - start)

        port = free_port()
        log = root / "server.log"
        command = [str(medseg), "serve", "--studies", str(studies), "--bundles", str(BUNDLE.parent)]
        command += ["--port", str(port), "--device", "cpu", "--app-dir", str(root / "app")]
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(f"{url}/info/", process, log)
            client = MONAILabelClient(url, tmpdir=str(root / "client"))
            (root / "client").mkdir()
            client.infer("ct_abdomen_unet", "ct_0", {})  # warm-up: loads the bundle
            server_s = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                client.infer("ct_abdomen_unet", "ct_0", {})
                server_s.append(time.perf_counter() - start)
        finally:
            stop(process)

    figures = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "image_shape": list(ct.image.shape),
        "repeats": args.repeats,
        "server_warm_infer_median_s": round(statistics.median(server_s), 2),
        "server_warm_infer_s": [round(s, 2) for s in server_s],
        "segment_command_median_s": round(statistics.median(segment_s), 2),
        "segment_command_s": [round(s, 2) for s in segment_s],
    }
    print(f"CPU: {figures['cpu']} ({figures['cores']} cores visible)")
    print(f"CT phantom {tuple(ct.image.shape)}, bundle ct_abdomen_unet, device cpu, median of {args.repeats}:")
    print(f"  MONAI Label server, warm inference (request to label file): {figures['server_warm_infer_median_s']} s")
    print(f"  medseg segment, whole command (start, load, infer, write): {figures['segment_command_median_s']} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
