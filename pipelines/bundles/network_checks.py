"""The slow conformance checks: build the network, export it, run the bundle with plain MONAI.

``net_in_out``
    :func:`monai.bundle.verify_net_in_out` passes with the metadata's input and output spec.
``export``
    :func:`monai.bundle.ckpt_export` writes a TorchScript model giving the checkpoint's output
    (``torch.allclose``, ``atol=1e-4``) on a random input of the metadata's input shape.
``run``
    ``python -m monai.bundle run --config_file configs/inference.json ...`` in a subprocess segments
    a tiny generated volume and writes a label map on that volume's grid.

Without ``models/model.pt`` the ``export`` and ``run`` checks use a randomly initialised network
saved to a temporary checkpoint, and say so in the notes. The bundle folder is never written to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from pipelines.bundles.bundle import config_parser, preprocessing_pixdim
from pipelines.bundles.checks import BundleFiles, first_line
from pipelines.bundles.layout import INFERENCE, METADATA, WEIGHTS
from pipelines.bundles.metadata import InputSpec
from pipelines.bundles.weights import read_weights
from pipelines.io.writers import atomic_path

__all__ = ["check_export", "check_net_in_out", "check_run"]

_TINY_SHAPE = (40, 36, 24)
"""Voxels of the volume the ``run`` check segments."""


def check_net_in_out(files: BundleFiles, label: str, device: str) -> list[str]:
    """``verify_net_in_out`` on ``network_def`` with the metadata's spec (``n = p = 1``)."""
    from monai.bundle import verify_net_in_out

    root = files.root
    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(root / METADATA),
            config_file=str(root / INFERENCE),
            device=device,
            p=1,
            n=1,
            any=1,
            bundle_root=str(root),
        )
    except Exception as err:  # any failure of the network or its spec is the finding itself
        return [f"{label}: {INFERENCE}: verify_net_in_out with the metadata's input spec failed: {first_line(err)}"]
    return []


def _random_note(seed: int) -> str:
    return f"no {WEIGHTS}: export and run checked with randomly initialised weights (seed {seed})"


def _network(files: BundleFiles, seed: int = 0) -> torch.nn.Module:
    """The bundle's ``network_def``, built on the CPU after seeding torch (random weights)."""
    torch.manual_seed(seed)
    parser = config_parser(files.root, [files.root / INFERENCE], metadata=files.json(METADATA))
    return parser.get_parsed_content("network_def")


def _checkpoint(files: BundleFiles, tmp: Path, notes: list[str], seed: int = 0) -> Path:
    """``models/model.pt``, or a randomly initialised network's weights saved in ``tmp``."""
    if (files.root / WEIGHTS).is_file():
        return files.root / WEIGHTS
    if _random_note(seed) not in notes:
        notes.append(_random_note(seed))
    checkpoint = tmp / "random_model.pt"
    torch.save(_network(files, seed).state_dict(), checkpoint)
    return checkpoint


def check_export(
    files: BundleFiles,
    label: str,
    device: str,
    spec: InputSpec,
    notes: list[str],
    atol: float = 1e-4,
    seed: int = 0,
) -> list[str]:
    """TorchScript export of ``network_def`` with the bundle's weights gives the eager network's output."""
    from monai.bundle import ckpt_export

    root = files.root
    network = _network(files, seed)
    with tempfile.TemporaryDirectory(prefix="medseg-export-") as tmp_name:
        tmp = Path(tmp_name)
        key = ""
        if (root / WEIGHTS).is_file():
            checkpoint, where = root / WEIGHTS, WEIGHTS
            try:
                state, loaded = read_weights(checkpoint)
            except ValueError as err:
                return [f"{label}: {WEIGHTS}: {first_line(err)}"]
            key = loaded.key
            try:
                network.load_state_dict(state)
            except RuntimeError as err:
                return [f"{label}: {WEIGHTS}: weights do not fit 'network_def': {first_line(err)}"]
            del state
        else:
            if _random_note(seed) not in notes:
                notes.append(_random_note(seed))
            checkpoint, where = tmp / "random_model.pt", INFERENCE
            torch.save(network.state_dict(), checkpoint)
        exported = tmp / "model.ts"
        try:
            ckpt_export(
                net_id="network_def",
                filepath=str(exported),
                ckpt_file=str(checkpoint),
                meta_file=str(root / METADATA),
                config_file=str(root / INFERENCE),
                key_in_ckpt=key,
                bundle_root=str(root),
            )
            scripted = torch.jit.load(str(exported), map_location=device)
        except Exception as err:  # a network TorchScript cannot compile is the finding itself
            return [f"{label}: {INFERENCE}: ckpt_export of 'network_def' to TorchScript failed: {first_line(err)}"]
        generator = torch.Generator().manual_seed(seed)
        sample = torch.rand((1, spec.channels, *spec.spatial_shape), generator=generator).to(device)
        network = network.eval().to(device)
        with torch.no_grad():
            eager = network(sample)
            converted = scripted(sample)
        if eager.shape != converted.shape or not torch.allclose(eager, converted, atol=atol):
            diff = (eager - converted).abs().max().item() if eager.shape == converted.shape else float("nan")
            return [
                f"{label}: {where}: the TorchScript export differs from the eager network (output shapes "
                f"{tuple(eager.shape)} / {tuple(converted.shape)}, max abs difference {diff:.3g}, allowed {atol})"
            ]
    return []


def _tiny_volume(path: Path, channels: int, modality: str, spacing_mm: Sequence[float], seed: int = 0) -> np.ndarray:
    """Write a small NIfTI (LPS, a bright ellipsoid in a dim body) and return its 4x4 affine (mm).

    The volume is :data:`_TINY_SHAPE` voxels of 1.3 x ``spacing_mm``; channels go last (i, j, k, C),
    the NIfTI convention that ``EnsureChannelFirstd`` undoes.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in _TINY_SHAPE], indexing="ij"))
    body = (grid**2).sum(0) < 0.8
    blob = ((grid - 0.2) ** 2 / 0.1).sum(0) < 1
    if modality.upper() == "CT":
        image = np.where(body, 40.0, -1000.0) + np.where(blob, 120.0, 0.0) + rng.normal(0, 10, _TINY_SHAPE)
    else:
        image = np.where(body, 400.0, 0.0) + np.where(blob, 500.0, 0.0) + np.abs(rng.normal(0, 20, _TINY_SHAPE)) * body
    data = np.stack([image * (1 + 0.1 * c) for c in range(channels)], -1) if channels > 1 else image
    spacing = np.asarray(spacing_mm, dtype=float) * 1.3
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [20.0, 15.0, -30.0]
    img = nib.Nifti1Image(data.astype(np.float32 if modality.upper() != "CT" else np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return affine


def _run_command(copy: Path, volume: Path, output: Path, device: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(copy / INFERENCE),
        "--meta_file",
        str(copy / METADATA),
        "--bundle_root",
        str(copy),
        "--datalist",
        repr([str(volume)]),
        "--output_dir",
        str(output),
        "--device",
        f"$torch.device('{device}')",
    ]


def check_run(
    files: BundleFiles, label: str, device: str, spec: InputSpec, notes: list[str], timeout_s: float
) -> list[str]:
    """Plain ``python -m monai.bundle run`` segments a tiny volume and writes labels on its grid."""
    root = files.root
    pixdim = preprocessing_pixdim(config_parser(root, [root / INFERENCE])) or [1.5, 1.5, 2.0]
    if len(pixdim) == 1:
        pixdim = pixdim * 3
    with tempfile.TemporaryDirectory(prefix="medseg-run-") as tmp_name:
        tmp = Path(tmp_name)
        copy = tmp / root.name
        # The copy keeps anything the configs may import from the bundle folder, without weights.
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns("models", "eval", "*.ts", "__pycache__"))
        (copy / "models").mkdir()
        checkpoint = _checkpoint(files, tmp, notes)
        try:
            os.symlink(checkpoint.resolve(), copy / WEIGHTS)
        except OSError:  # no symlinks on this file system
            shutil.copy2(checkpoint, copy / WEIGHTS)
        volume = tmp / "tiny_case.nii.gz"
        affine = _tiny_volume(volume, spec.channels, spec.modality, pixdim[:3])
        output = tmp / "out"
        # The child imports this package for `pipelines.*` targets in the configs, installed or not.
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
        shown = "python -m monai.bundle run --config_file configs/inference.json"
        try:
            done = subprocess.run(
                _run_command(copy, volume, output, device),
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            size = "x".join(map(str, _TINY_SHAPE))
            return [f"{label}: {INFERENCE}: `{shown}` did not finish within {timeout_s:.0f} s on a {size} volume"]
        if done.returncode != 0:
            tail = " | ".join(line.strip() for line in (done.stderr or done.stdout).strip().splitlines()[-3:])
            return [f"{label}: {INFERENCE}: `{shown}` failed (exit {done.returncode}): {tail}"]
        return _check_written(output, affine, f"{label}: {INFERENCE}: `{shown}`")


def _check_written(output: Path, affine: np.ndarray, where: str) -> list[str]:
    """The label map under ``output`` lies on the tiny volume's grid (:data:`_TINY_SHAPE`, ``affine``)."""
    written = sorted(p for p in output.rglob("*") if p.name.endswith((".nii.gz", ".nii")))
    if not written:
        return [
            f"{where} wrote nothing to --output_dir (postprocessing should end with SaveImaged writing to @output_dir)"
        ]
    result: Any = nib.load(written[0])
    if tuple(result.shape[:3]) != _TINY_SHAPE:
        return [
            f"{where} wrote {written[0].name} with shape {tuple(result.shape)}, the input "
            f"has {_TINY_SHAPE}; the postprocessing must invert the preprocessing (Invertd)"
        ]
    if not np.allclose(result.affine, affine, atol=1e-3):
        return [
            f"{where} wrote {written[0].name} with an affine different from the input's; "
            "the label map must lie on the input grid"
        ]
    return []
