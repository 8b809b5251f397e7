"""The CUDA path: volume and sliding window on the GPU, AMP, fewer windows after out-of-memory.

Skipped without a CUDA device (CI has none); run on a GPU machine with ``pytest -m gpu``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipelines.inference import Predictor, resolve_precision
from pipelines.segment import Segmenter, SegmentOptions

pytestmark = pytest.mark.gpu


def test_segment_on_cuda_uses_amp_and_keeps_the_window_on_the_gpu(tmp_path: Path, unet_bundle: Path) -> None:
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_nifti

    phantom = make_ct_phantom(3, shape=(160, 128, 64), spacing_mm=(1.8, 1.8, 3.0), orientation="LPS")
    image_path, _ = write_nifti(phantom, tmp_path / "case")
    segmenter = Segmenter(unet_bundle, SegmentOptions(device="cuda", outputs=("labels",)))
    assert segmenter.device.type == "cuda"
    assert segmenter.precision == resolve_precision("auto", segmenter.device) != "fp32"
    prepared = segmenter.prepare(image_path)
    scored = segmenter.infer(prepared.data)
    assert scored["pred"].device.type == "cuda", "scores stay on the GPU until postprocessing"
    result = segmenter.run(image_path, tmp_path / "out")
    labels = nib.load(result.files["labels"])
    assert labels.shape == phantom.image.shape
    np.testing.assert_allclose(labels.affine, phantom.affine, atol=1e-4)
    run = json.loads(result.files["run"].read_text())
    assert run["device"].startswith("cuda") and run["precision"] in ("bf16", "fp16")
    assert run["fp32_layers"] == ["model.0.residual", "model.0.conv.unit0.conv"]


def test_out_of_memory_retries_with_fewer_windows() -> None:
    from monai.inferers import SlidingWindowInferer

    class Flaky(SlidingWindowInferer):
        """Raises CUDA out-of-memory while more than one window is batched."""

        def __call__(self, inputs, network, *args, **kwargs):  # type: ignore[override]
            if self.sw_batch_size > 1:
                raise torch.OutOfMemoryError("simulated")
            return super().__call__(inputs, network, *args, **kwargs)

    inferer = Flaky(roi_size=(32, 32, 32), sw_batch_size=8)
    network = torch.nn.Conv3d(1, 2, 1)
    predictor = Predictor(network, inferer, torch.device("cuda:0"), "bf16")
    out = predictor(torch.rand(1, 1, 64, 64, 40))
    assert out.shape == (1, 2, 64, 64, 40) and out.device.type == "cuda"
    assert inferer.sw_batch_size == 1
