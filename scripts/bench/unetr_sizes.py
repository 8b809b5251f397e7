#!/usr/bin/env python
"""UNETR sizes for the CT multi-organ bundle: parameters, weights file, CPU seconds per window and per training patch.

MONAI's ``UNETR`` exposes the encoder width (``hidden_size``), the MLP width (``mlp_dim``), the
heads (``num_heads``) and the decoder width (``feature_size``); its patch is fixed at 16 voxels and
its depth at 12 layers (the decoder taps layers 3, 6 and 9). The sizes named "patch 8" are
:class:`pipelines.networks.PatchUNETR`, the same architecture from MONAI's blocks with the patch
size and the depth as parameters. Each size is built at its input (96³, or 64³ where its name says
so; the position embeddings fix it) with 14 outputs and timed in this process, one after the other:

* parameters, and the ``models/model.pt`` size as float32 and as float16 (what the bundle stores),
  and the float16 file zlib-compressed (about what git stores, which the bundle's budget counts);
* inference: median seconds per window (batch of 4 windows, no gradient) in float32 and bf16;
* training: median seconds per patch (batch of 2, forward + backward + AdamW step).

Held-out Dice needs a training run per size and is in the bundle docs for the sizes trained.

    python scripts/bench/unetr_sizes.py                   # all sizes, 3 timed repeats each
    python scripts/bench/unetr_sizes.py --repeats 5 --json bench_out/unetr_sizes.json
    python scripts/bench/unetr_sizes.py --only "width 160, features 15, 64³ (0.3.0)"
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model

SIZES = {
    "ViT-B (0.1.x)": {"hidden_size": 768, "mlp_dim": 3072, "num_heads": 12, "feature_size": 16},
    "width 384, features 12": {"hidden_size": 384, "mlp_dim": 1536, "num_heads": 6, "feature_size": 12},
    "width 256, features 16": {"hidden_size": 256, "mlp_dim": 1024, "num_heads": 8, "feature_size": 16},
    "width 256, features 8 (0.2.0)": {"hidden_size": 256, "mlp_dim": 1024, "num_heads": 8, "feature_size": 8},
    "width 256, features 15, 64³": {"hidden_size": 256, "mlp_dim": 1024, "num_heads": 8, "feature_size": 15, "img": 64},
    "width 160, features 15, 64³ (0.3.0)": {
        "hidden_size": 160,
        "mlp_dim": 640,
        "num_heads": 8,
        "feature_size": 15,
        "img": 64,
    },
    # the largest that fits the 4.1 MB left of the bundle's repository budget (float16, 3.8 MB compressed)
    "width 64, features 12, 64³": {"hidden_size": 64, "mlp_dim": 128, "num_heads": 4, "feature_size": 12, "img": 64},
    # PatchUNETR: 8-voxel tokens (12 mm at 1.5 mm), one decoder level fewer
    "patch 8, width 96, 8 layers, features 16, 64³": {
        "patch_size": 8,
        "num_layers": 8,
        "hidden_size": 96,
        "mlp_dim": 384,
        "num_heads": 4,
        "feature_size": 16,
        "img": 64,
    },
    "patch 8, width 96, 12 layers, features 16, 64³": {
        "patch_size": 8,
        "num_layers": 12,
        "hidden_size": 96,
        "mlp_dim": 384,
        "num_heads": 4,
        "feature_size": 16,
        "img": 64,
    },
    "patch 8, width 64, 12 layers, features 16, 64³": {
        "patch_size": 8,
        "num_layers": 12,
        "hidden_size": 64,
        "mlp_dim": 256,
        "num_heads": 4,
        "feature_size": 16,
        "img": 64,
    },
}


def _median_seconds(step, repeats: int) -> float:
    step()  # warm-up: oneDNN picks its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, shape: dict[str, int], repeats: int) -> dict:
    import torch
    from monai.networks.nets import UNETR

    from pipelines.networks import PatchUNETR

    torch.manual_seed(0)
    shape = dict(shape)
    img = shape.pop("img", 96)
    network = PatchUNETR if "patch_size" in shape else UNETR
    net = network(
        in_channels=1, out_channels=14, img_size=img, proj_type="conv", norm_name="instance", res_block=True, **shape
    )
    state = net.state_dict()
    sizes = {}
    for label, dtype in (("float32", torch.float32), ("float16", torch.float16)):
        buffer = io.BytesIO()
        torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, buffer)
        sizes[label] = round(len(buffer.getvalue()) / 1e6, 1)
        if label == "float16":  # the file the bundle stores, compressed as git stores it
            sizes["float16_zlib"] = round(len(zlib.compress(buffer.getvalue())) / 1e6, 1)
    row = {
        "size": name,
        "input": img,
        **shape,
        "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
        "file_mb": sizes,
    }
    windows = torch.rand(4, 1, img, img, img)
    net.eval()
    for precision in ("fp32", "bf16"):

        def infer(bf16: bool = precision == "bf16") -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                net(windows)

        row[f"infer_s_per_window_{precision}"] = round(_median_seconds(infer, repeats) / len(windows), 3)
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    patches = torch.rand(2, 1, img, img, img)
    for precision in ("fp32", "bf16"):

        def step(bf16: bool = precision == "bf16") -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = net(patches).float().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        row[f"train_s_per_patch_{precision}"] = round(_median_seconds(step, repeats) / len(patches), 3)
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench_out/unetr_sizes.json"))
    parser.add_argument("--only", nargs="+", choices=sorted(SIZES), default=None, help="measure these sizes only")
    args = parser.parse_args()
    import torch

    rows = [measure(name, SIZES[name], args.repeats) for name in args.only or SIZES]
    result = {
        "benchmark": "unetr_sizes",
        "date": datetime.date.today().isoformat(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "sizes": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"CPU: {result['cpu_model']} ({result['cpu_count']} cores); written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
