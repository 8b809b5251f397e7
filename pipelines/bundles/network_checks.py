"""The slow conformance checks: build the network, export it, run the bundle with plain MONAI.

``net_in_out``
    :func:`monai.bundle.verify_net_in_out` passes with the metadata's input and output spec.
``export``
    :func:`monai.bundle.ckpt_export` writes a TorchScript model giving the checkpoint's output
    (``torch.allclose``, ``atol=1e-4``) on a random input of the metadata's input shape; a shipped
    ``models/model.ts`` must load with ``torch.jit.load`` and give an output of the eager network's
    shape (and its values too, when ``models/model.pt`` is shipped beside it), as the Zoo's CI loads it.
``run``
    ``python -m monai.bundle run --config_file configs/inference.json ...`` in a subprocess segments
    a tiny generated volume and writes a label map on that volume's grid.

The inference config may be ``configs/inference.json``, ``.yaml`` or ``.yml`` (as MONAI accepts).
``overrides`` (``--override``) are applied to it in every check, as ``medseg segment`` applies them:
through :func:`~pipelines.bundles.bundle.config_parser`, as keyword overrides of ``verify_net_in_out``
and ``ckpt_export``, and in an ``--args_file`` of the ``monai.bundle run`` subprocess.

Without ``models/model.pt`` the ``export`` and ``run`` checks use a randomly initialised network
saved to a temporary checkpoint, and say so in the notes. The bundle folder is never written to.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from pipelines.bundles.bundle import config_parser, preprocessing_pixdim
from pipelines.bundles.checks import BundleFiles, first_line
from pipelines.bundles.layout import METADATA, TORCHSCRIPT, WEIGHTS
from pipelines.bundles.metadata import InputSpec
from pipelines.bundles.weights import read_weights
from pipelines.io.writers import atomic_path

__all__ = ["check_export", "check_net_in_out", "check_run"]

_TINY_SHAPE = (40, 36, 24)
"""Voxels of the volume the ``run`` check segments."""


def _checked_overrides(files: BundleFiles, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``overrides`` once the inference config is known to hold each id (else ValueError naming it)."""
    if overrides:
        config_parser(files.root, [files.root / files.inference_rel], user_overrides=overrides)
    return dict(overrides or {})


def check_net_in_out(
    files: BundleFiles, label: str, device: str, overrides: Mapping[str, Any] | None = None
) -> list[str]:
    """``verify_net_in_out`` on ``network_def`` with the metadata's spec (``n = p = 1``)."""
    from monai.bundle import verify_net_in_out

    root = files.root
    inference = files.inference_rel
    extra = _checked_overrides(files, overrides)
    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(root / METADATA),
            config_file=str(root / inference),
            device=device,
            p=1,
            n=1,
            any=1,
            **{**extra, "bundle_root": str(root)},
        )
    except Exception as err:  # any failure of the network or its spec is the finding itself
        return [f"{label}: {inference}: verify_net_in_out with the metadata's input spec failed: {first_line(err)}"]
    return []


def _random_note(seed: int) -> str:
    return f"no {WEIGHTS}: export and run checked with randomly initialised weights (seed {seed})"


def _network(files: BundleFiles, seed: int = 0, overrides: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """The bundle's ``network_def``, built on the CPU after seeding torch (random weights)."""
    torch.manual_seed(seed)
    parser = config_parser(
        files.root, [files.root / files.inference_rel], metadata=files.json(METADATA), user_overrides=overrides
    )
    return parser.get_parsed_content("network_def")


def _checkpoint(
    files: BundleFiles, tmp: Path, notes: list[str], seed: int = 0, overrides: Mapping[str, Any] | None = None
) -> Path:
    """``models/model.pt``, or a randomly initialised network's weights saved in ``tmp``."""
    if (files.root / WEIGHTS).is_file():
        return files.root / WEIGHTS
    if _random_note(seed) not in notes:
        notes.append(_random_note(seed))
    checkpoint = tmp / "random_model.pt"
    torch.save(_network(files, seed, overrides).state_dict(), checkpoint)
    return checkpoint


def check_export(
    files: BundleFiles,
    label: str,
    device: str,
    spec: InputSpec,
    notes: list[str],
    atol: float = 1e-4,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> list[str]:
    """TorchScript export of ``network_def`` gives the eager network's output; a shipped ``models/model.ts`` loads.

    The eager network has the bundle's ``models/model.pt`` weights when shipped, else random ones
    (noted). A shipped ``models/model.ts`` must load and give an output of the eager network's shape;
    with ``models/model.pt`` beside it, also its values (``atol``): both are the same trained model.
    """
    from monai.bundle import ckpt_export

    root = files.root
    inference = files.inference_rel
    extra = _checked_overrides(files, overrides)
    network = _network(files, seed, extra)
    has_weights = (root / WEIGHTS).is_file()
    with tempfile.TemporaryDirectory(prefix="medseg-export-") as tmp_name:
        tmp = Path(tmp_name)
        key = ""
        if has_weights:
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
            checkpoint, where = tmp / "random_model.pt", inference
            torch.save(network.state_dict(), checkpoint)
        exported = tmp / "model.ts"
        try:
            ckpt_export(
                net_id="network_def",
                filepath=str(exported),
                ckpt_file=str(checkpoint),
                meta_file=str(root / METADATA),
                config_file=str(root / inference),
                key_in_ckpt=key,
                **{**extra, "bundle_root": str(root)},
            )
            scripted = torch.jit.load(str(exported), map_location=device)
        except Exception as err:  # a network TorchScript cannot compile is the finding itself
            return [f"{label}: {inference}: ckpt_export of 'network_def' to TorchScript failed: {first_line(err)}"]
        generator = torch.Generator().manual_seed(seed)
        sample = torch.rand((1, spec.channels, *spec.spatial_shape), generator=generator).to(device)
        network = network.eval().to(device)
        with torch.no_grad():
            eager = network(sample)
            converted = scripted(sample)
        problems = []
        if eager.shape != converted.shape or not torch.allclose(eager, converted, atol=atol):
            problems.append(_differs(label, where, "the TorchScript export", eager, converted, atol))
        if (root / TORCHSCRIPT).is_file():
            problems += _check_shipped_torchscript(root, label, device, sample, eager, has_weights, atol)
    return problems


def _differs(label: str, where: str, what: str, eager: torch.Tensor, other: torch.Tensor, atol: float) -> str:
    diff = (eager - other).abs().max().item() if eager.shape == other.shape else float("nan")
    return (
        f"{label}: {where}: {what} differs from the eager network (output shapes "
        f"{tuple(eager.shape)} / {tuple(other.shape)}, max abs difference {diff:.3g}, allowed {atol})"
    )


def _check_shipped_torchscript(
    root: Path, label: str, device: str, sample: torch.Tensor, eager: torch.Tensor, compare_values: bool, atol: float
) -> list[str]:
    """``models/model.ts`` loads and gives the eager network's output shape (and values when ``compare_values``)."""
    try:
        shipped = torch.jit.load(str(root / TORCHSCRIPT), map_location=device)
        with torch.no_grad():
            output = shipped.eval()(sample)
    except Exception as err:  # a TorchScript file that cannot load or run is the finding itself
        return [f"{label}: {TORCHSCRIPT}: does not load and run with torch.jit.load: {first_line(err)}"]
    if not isinstance(output, torch.Tensor):
        return [f"{label}: {TORCHSCRIPT}: expected a tensor output, got {type(output).__name__}"]
    if output.shape != eager.shape:
        return [_differs(label, TORCHSCRIPT, "the shipped TorchScript model", eager, output, atol)]
    if compare_values and not torch.allclose(eager, output, atol=atol):
        what = f"the shipped TorchScript model (with {WEIGHTS} beside it)"
        return [_differs(label, TORCHSCRIPT, what, eager, output, atol)]
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


def _run_command(
    copy: Path, inference: str, volume: Path, output: Path, device: str, args_file: Path | None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(copy / inference),
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
        *(["--args_file", str(args_file)] if args_file is not None else []),
    ]


def check_run(
    files: BundleFiles,
    label: str,
    device: str,
    spec: InputSpec,
    notes: list[str],
    timeout_s: float,
    overrides: Mapping[str, Any] | None = None,
) -> list[str]:
    """Plain ``python -m monai.bundle run`` segments a tiny volume and writes labels on its grid.

    ``overrides`` reach the subprocess in an ``--args_file`` (MONAI applies its extra keys as overrides).
    """
    root = files.root
    inference = files.inference_rel
    extra = _checked_overrides(files, overrides)
    parser = config_parser(root, [root / inference], user_overrides=extra)
    pixdim = preprocessing_pixdim(parser) or [1.5, 1.5, 2.0]
    if len(pixdim) == 1:
        pixdim = pixdim * 3
    with tempfile.TemporaryDirectory(prefix="medseg-run-") as tmp_name:
        tmp = Path(tmp_name)
        copy = tmp / root.name
        # The copy keeps anything the configs may import from the bundle folder, without weights.
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns("models", "eval", "*.ts", "__pycache__"))
        (copy / "models").mkdir()
        checkpoint = _checkpoint(files, tmp, notes, overrides=extra)
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
        shown = f"python -m monai.bundle run --config_file {inference}"
        args_file = None
        if extra:
            args_file = tmp / "overrides.json"
            args_file.write_text(json.dumps(extra), encoding="utf-8")
        try:
            done = subprocess.run(
                _run_command(copy, inference, volume, output, device, args_file),
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            size = "x".join(map(str, _TINY_SHAPE))
            return [f"{label}: {inference}: `{shown}` did not finish within {timeout_s:.0f} s on a {size} volume"]
        if done.returncode != 0:
            tail = " | ".join(line.strip() for line in (done.stderr or done.stdout).strip().splitlines()[-3:])
            return [f"{label}: {inference}: `{shown}` failed (exit {done.returncode}): {tail}"]
        return _check_written(output, affine, f"{label}: {inference}: `{shown}`")


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
