"""The MONAI Label train task of one medseg bundle: fine-tune it on the datastore's labelled images.

MONAI Label runs a train request in a child process of the server. This task writes the
datastore's final labels as a medseg data manifest (all labelled images but the last for
training, the last for validation) and runs ``python -m pipelines train`` on it, the same
training as ``medseg train`` (the bundle's own ``train.json`` through MONAI's ConfigWorkflow),
starting from the bundle's current weights. The best checkpoint replaces ``models/model.pt``;
the infer task loads it on its next request.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from pipelines.io.writers import write_json
from pipelines.label_app.catalog import ServedBundle
from pipelines.label_app.checks import check_max_epochs

logger = logging.getLogger(__name__)

__all__ = ["MedsegTrainTask", "labelled_pairs", "train_manifest"]

FINAL = DefaultLabelTag.FINAL
MIN_LABELLED = 2
"""One image to train on and one to validate on (the best checkpoint is chosen by validation Dice)."""


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def labelled_pairs(datastore: Datastore, model: str, *, only_model: bool) -> tuple[list[dict[str, str]], list[str]]:
    """The datastore's final labels that belong to ``model``, and the ids of labels that name no model.

    One datastore serves every bundle, so a final label is used for a model only when its label
    info names it (``{"model": NAME}``: the ``params`` of ``save_label``, or an infer with
    ``save_label``). A label that names no model is used only when the app serves one model;
    otherwise it is left out (a CT model must not train on a brain MR label) and reported.
    """
    pairs: list[dict[str, str]] = []
    unassigned: list[str] = []
    for image_id in sorted(datastore.get_labeled_images()):
        named = (datastore.get_label_info(image_id, FINAL) or {}).get("model")
        if named == model or (named is None and only_model):
            pairs.append(
                {"image": datastore.get_image_uri(image_id), "label": datastore.get_label_uri(image_id, FINAL)}
            )
        elif named is None:
            unassigned.append(image_id)
    return pairs, unassigned


def train_manifest(served: ServedBundle, pairs: list[dict[str, str]], path: Path) -> dict[str, Any]:
    """Write labelled images as a medseg manifest at ``path`` (absolute paths; the last for validation).

    Raises:
        ValueError: fewer than :data:`MIN_LABELLED` labelled images.
    """
    if len(pairs) < MIN_LABELLED:
        raise ValueError(
            f"model {served.model}: {len(pairs)} labelled image(s) in the datastore; training needs at least "
            f"{MIN_LABELLED} (one to train on, one to validate on). Save final labels for it first "
            f'(PUT /datastore/label with params {{"model": "{served.model}"}})'
        )
    cases = [
        {"case_id": f"case_{i:04d}", "image": str(Path(d["image"]).resolve()), "label": str(Path(d["label"]).resolve())}
        for i, d in enumerate(pairs)
    ]
    manifest = {
        "name": f"monailabel_{served.model}",
        "description": "final labels of a MONAI Label datastore",
        "modality": {"0": served.bundle.modality or "CT"},
        "labels": {str(i): name for i, name in sorted(served.bundle.labels.items())},
        "training": cases[:-1],
        "validation": cases[-1:],
    }
    write_json(manifest, path)
    return manifest


class MedsegTrainTask(TrainTask):
    """Fine-tune one bundle on the datastore's final labels.

    Args:
        served: the bundle and its MONAI Label name.
        work_dir: where manifests and training logs go (``<work_dir>/<model>/``).
        max_epochs: epochs when the request does not say (request key ``max_epochs``).
        device: ``auto`` (the bundle's choice), ``cpu``, ``cuda`` or ``cuda:N``.
        only_model: the app serves this model alone (labels that name no model are then its own).
    """

    def __init__(
        self,
        served: ServedBundle,
        work_dir: str | Path,
        max_epochs: int = 1,
        device: str = "auto",
        only_model: bool = False,
    ) -> None:
        super().__init__(f"Fine-tune {served.bundle.name} {served.bundle.version} on the datastore's final labels")
        self.served = served
        self.work_dir = Path(work_dir) / served.model
        self.max_epochs = max_epochs
        self.device = device
        self.only_model = only_model

    def config(self) -> dict[str, Any]:
        return {"max_epochs": self.max_epochs, "device": self.device}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Train; returns the weights file with its sha256 before and after, epochs and timings.

        Raises:
            ValueError: a bad ``max_epochs`` or too few labelled images.
            RuntimeError: the training process failed (its last output lines are in the message).
        """
        epochs = check_max_epochs(request.get("max_epochs"), self.max_epochs)
        device = str(request.get("device") or self.device)
        manifest_path = self.work_dir / "manifest.json"
        pairs, unassigned = labelled_pairs(datastore, self.served.model, only_model=self.only_model)
        if unassigned:
            logger.warning(
                '%s: final labels of %s name no model and are left out (save them with params {"model": "%s"})',
                self.served.model,
                ", ".join(unassigned),
                self.served.model,
            )
        manifest = train_manifest(self.served, pairs, manifest_path)
        weights = self.served.bundle.weights
        before = _sha256(weights)
        command = [
            sys.executable,
            "-m",
            "pipelines",
            "train",
            "--bundle",
            str(self.served.bundle.root),
            "--manifest",
            str(manifest_path),
            "--max-epochs",
            str(epochs),
            "--val-interval",
            "1",
            "--allow-outside-paths",
            "--device",
            device,
        ]
        logger.info("training %s: %s", self.served.model, " ".join(command))
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        log = self.work_dir / "train.log"
        log.write_text(done.stdout + done.stderr, encoding="utf-8")
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"training {self.served.model} failed (exit {done.returncode}; log {log}): {tail}")
        after = _sha256(weights)
        result = {
            "model": self.served.model,
            "bundle": {"name": self.served.bundle.name, "version": self.served.bundle.version},
            "weights": str(weights),
            "sha256_before": before,
            "sha256_after": after,
            "updated": before != after,
            "max_epochs": epochs,
            "training": [c["image"] for c in manifest["training"]],
            "validation": [c["image"] for c in manifest["validation"]],
            "left_out_unassigned": unassigned,
            "seconds": round(seconds, 1),
            "log": str(log),
            "summary": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "",
        }
        logger.info("trained %s in %.0f s: %s", self.served.model, seconds, result["summary"])
        return result
