"""What the batch tests share: small phantom studies with their manifest, and ways to run and read a batch.

Batch-only helpers (the project-wide ones are in :mod:`tests.helpers`); fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pipelines.batch.ledger import LEDGER
from pipelines.cli.batch import add_batch_parser
from pipelines.data.phantoms.make import make_ct_phantom
from pipelines.data.phantoms.write import write_nifti
from tests.helpers import REPO

# 48 x 40 x 24 voxels of 3 x 3 x 4 mm resample to 96 x 80 x 48 at the bundle's 1.5 x 1.5 x 2 mm:
# a single 96^3 sliding window, so a case takes about a second on one CPU core.
SHAPE = (48, 40, 24)
SPACING_MM = (3.0, 3.0, 4.0)
CASES = [f"case_{i:02d}" for i in range(6)]
LABELS = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney_right", "4": "kidney_left"}
FAST = ("labels", "stats")


def phantom(folder: Path, seed: int) -> Path:
    """A small CT phantom ``folder/image.nii.gz`` (with ``label.nii.gz``); returns the image."""
    image, _ = write_nifti(make_ct_phantom(seed, shape=SHAPE, spacing_mm=SPACING_MM), folder)
    return image


def corrupt(path: Path, source: Path) -> Path:
    """A gzip NIfTI cut in half: the header reads, the voxel data does not."""
    data = source.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def write_manifest(path: Path, entries: list[Any], split: str = "test") -> Path:
    path.write_text(json.dumps({"name": "phantoms", "modality": "CT", "labels": LABELS, split: entries}, indent=1))
    return path


def make_study(root: Path, case_ids: list[str], with_corrupt: bool = True) -> Path:
    """Phantoms ``root/data/<id>/image.nii.gz`` and ``root/manifest.json`` (test split), with a corrupt case."""
    entries: list[Any] = []
    for seed, case_id in enumerate(case_ids):
        image = phantom(root / "data" / case_id, seed)
        entry: dict[str, Any] = {"image": str(image.relative_to(root)), "case_id": case_id}
        if seed % 2:
            entry["label"] = str((image.parent / "label.nii.gz").relative_to(root))  # labels are optional
        entries.append(entry)
    if with_corrupt:
        corrupt(root / "data" / "corrupt.nii.gz", root / "data" / case_ids[0] / "image.nii.gz")
        entries.append("data/corrupt.nii.gz")  # case id from the file name
    return write_manifest(root / "manifest.json", entries)


def records(output: Path) -> list[dict[str, Any]]:
    """The lines of ``output/ledger.jsonl``, in file order."""
    return [json.loads(line) for line in (output / LEDGER).read_text().splitlines() if line.strip()]


def labels(output: Path, case_id: str) -> np.ndarray:
    return np.asarray(nib.load(output / case_id / "labels.nii.gz").dataobj)


def parse(argv: list[str]) -> argparse.Namespace:
    """``medseg batch ARGV`` parsed by the batch subcommand's own parser."""
    parser = argparse.ArgumentParser()
    add_batch_parser(parser.add_subparsers())
    return parser.parse_args(["batch", *argv])


def subprocess_env() -> dict[str, str]:
    """The environment of a ``medseg batch`` subprocess: no torchrun variables, one thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")}
    env["OMP_NUM_THREADS"] = "1"  # same thread count everywhere, so outputs compare bit for bit
    env["PYTHONPATH"] = str(REPO)
    return env


def medseg(*args: str | Path) -> list[str]:
    """The command line of ``medseg -q batch ARGS`` in this interpreter."""
    return [sys.executable, "-m", "pipelines", "-q", "batch", *map(str, args)]
