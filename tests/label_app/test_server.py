"""The real MONAI Label server with the medseg app, driven by MONAI Label's own client.

One server for the module, on a free loopback port, over generated phantoms (a CT and small head
MRs); it is stopped by its PID whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import BUNDLES
from tests.label_app.servers import CT_ORGANS, dice, http_get, medseg_serve

pytestmark = [pytest.mark.label, pytest.mark.slow]

MR_SMALL = {"shape": (72, 72, 24), "spacing_mm": (1.6, 1.6, 4.0)}


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen
    studies: Path
    truth: Path
    bundles: Path
    log: Path

    def client(self, tmp: Path):
        from monailabel.client import MONAILabelClient

        tmp.mkdir(parents=True, exist_ok=True)
        return MONAILabelClient(self.url, tmpdir=str(tmp))


def _write_studies(studies: Path, truth: Path) -> None:
    from pipelines.bundles.bundle import load_bundle
    from pipelines.data.datasets import SEEDS, bundle_label_ids
    from pipelines.data.phantoms.make import make_brain_tumor_phantom, make_ct_phantom

    studies.mkdir(parents=True)
    truth.mkdir(parents=True)
    ct = make_ct_phantom(SEEDS["demo"][0], label_ids=bundle_label_ids(load_bundle(BUNDLES / "ct_abdomen_unet")))
    nib.save(nib.Nifti1Image(ct.image, ct.affine), studies / "ct_0.nii.gz")
    nib.save(nib.Nifti1Image(ct.label, ct.affine), truth / "ct_0.nii.gz")
    for i in range(3):
        mr = make_brain_tumor_phantom(SEEDS["demo"][1 + i], **MR_SMALL)
        nib.save(nib.Nifti1Image(mr.image, mr.affine), studies / f"mr_{i}.nii.gz")
        nib.save(nib.Nifti1Image(mr.label, mr.affine), truth / f"mr_{i}.nii.gz")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("label")
    studies, truth, bundles = root / "studies", root / "truth", root / "bundles"
    _write_studies(studies, truth)
    for name in ("ct_abdomen_unet", "mri_brain_tumor"):  # copies: the train test rewrites their weights
        shutil.copytree(BUNDLES / name, bundles / name, ignore=shutil.ignore_patterns("last_checkpoint_*", "eval"))
    with medseg_serve(root, str(studies), bundles, ["--max-connections", "4"]) as served:
        yield Server(served.url, served.port, served.process, studies, truth, bundles, served.log)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_info_lists_every_bundle_with_its_labels(server: Server, tmp_path: Path) -> None:
    from pipelines.bundles.bundle import load_bundle

    info = server.client(tmp_path).info()
    assert set(info["models"]) == {"ct_abdomen_unet", "mri_brain_tumor"}
    for name, model in info["models"].items():
        bundle = load_bundle(server.bundles / name)
        assert model["labels"] == {v: k for k, v in bundle.labels.items() if k != 0}
        assert model["bundle"]["version"] == bundle.version
    assert set(info["trainers"]) == {"ct_abdomen_unet", "mri_brain_tumor"}
    assert set(info["strategies"]) == {"random", "first"}


def test_ct_inference_matches_the_phantom_on_its_grid(server: Server, tmp_path: Path) -> None:
    out, params = server.client(tmp_path).infer("ct_abdomen_unet", "ct_0", {})
    label = nib.load(out)
    image = nib.load(server.studies / "ct_0.nii.gz")
    truth = np.asarray(nib.load(server.truth / "ct_0.nii.gz").dataobj)
    assert label.shape == image.shape
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    predicted = np.asarray(label.dataobj)
    names = params["label_names"]
    for organ in CT_ORGANS:
        assert dice(predicted == names[organ], truth == names[organ]) >= 0.9, organ
    bundle = params["medseg"]["bundle"]
    assert bundle["version"] == json.loads((BUNDLES / "ct_abdomen_unet/configs/metadata.json").read_text())["version"]
    assert bundle["model_sha256"] == _sha256(server.bundles / "ct_abdomen_unet" / "models" / "model.pt")
    assert params["medseg"]["input"]["sha256"] == _sha256(server.studies / "ct_0.nii.gz")


def test_mr_inference_returns_a_label_map_on_the_image_grid(server: Server, tmp_path: Path) -> None:
    out, params = server.client(tmp_path).infer("mri_brain_tumor", "mr_0", {})
    label = nib.load(out)
    image = nib.load(server.studies / "mr_0.nii.gz")
    assert label.shape == image.shape == MR_SMALL["shape"]
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= {0, 1}
    assert params["label_names"] == {"tumor": 1}
    assert params["medseg"]["bundle"]["name"] == "MRI brain tumour SegResNet"


@pytest.mark.parametrize(
    ("model", "image", "status"),
    [
        ("mri_brain_tumor", "../../etc/passwd", 400),
        ("mri_brain_tumor", "/etc/passwd", 400),
        ("mri_brain_tumor", "no_such_image", 404),
        ("no_such_model", "mr_0", 404),
    ],
)
def test_bad_requests_are_refused_with_4xx(server: Server, tmp_path: Path, model: str, image: str, status: int) -> None:
    from monailabel.client.client import MONAILabelClientException

    with pytest.raises(MONAILabelClientException, match=f"Status: {status};"):
        server.client(tmp_path).infer(model, image, {})


def test_concurrent_requests_are_all_answered_in_bounded_time(server: Server, tmp_path: Path) -> None:
    """10 at once against --max-connections 4: each is answered 200 or refused 503, none hangs."""
    statuses: list[int | str] = []

    def ask(i: int) -> None:
        request = urllib.request.Request(
            f"{server.url}/infer/mri_brain_tumor?image=mr_{i % 3}&output=json", b"", method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as answer:
                json.loads(answer.read())
                statuses.append(answer.status)
        except urllib.error.HTTPError as err:
            statuses.append(err.code)
        except OSError as err:
            statuses.append(type(err).__name__)

    start = time.monotonic()
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=320)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert len(statuses) == 10
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1
    assert time.monotonic() - start < 320
    assert http_get(f"{server.url}/info/")[0] == 200  # still serving afterwards


def test_server_listens_on_loopback_only(server: Server) -> None:
    listening = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if int(port, 16) == server.port and state == "0A":  # LISTEN
            listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, not 0.0.0.0
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", server.port), timeout=5):
        pass


def test_active_learning_first_and_random(server: Server, tmp_path: Path) -> None:
    client = server.client(tmp_path)
    ids = {"ct_0", "mr_0", "mr_1", "mr_2"}
    first = client.next_sample("first", {})
    assert first["id"] in ids and Path(first["path"]).parent == server.studies
    assert client.next_sample("random", {})["id"] in ids


def test_save_label_then_train_one_epoch_updates_the_weights(server: Server, tmp_path: Path) -> None:
    client = server.client(tmp_path)
    for image in ("mr_0", "mr_1"):
        client.save_label(
            image, str(server.truth / f"{image}.nii.gz"), tag="final", params={"model": "mri_brain_tumor"}
        )
    datastore = client.datastore()
    for image in ("mr_0", "mr_1"):
        saved = datastore["objects"][image]["labels"]["final"]["info"]
        assert saved["model"] == "mri_brain_tumor"
        assert (server.studies / "labels" / "final" / saved["name"]).is_file()

    weights = server.bundles / "mri_brain_tumor" / "models" / "model.pt"
    before = _sha256(weights)
    client.train_start("mri_brain_tumor", {"max_epochs": 1})
    deadline = time.monotonic() + 600
    while True:
        status = client.train_status()
        if status.get("status") in ("DONE", "ERROR"):
            break
        assert time.monotonic() < deadline, f"training not done after 600 s: {status}"
        time.sleep(3)
    details = "\n".join(status.get("details", []))
    assert status["status"] == "DONE", details
    result = json.loads(details.split("Result: ", 1)[1].splitlines()[0])
    assert result["weights"] == str(weights)
    assert result["sha256_before"] == before
    assert result["sha256_after"] == _sha256(weights) != before
    assert result["training"] and result["validation"]

    _, params = client.infer("mri_brain_tumor", "mr_2", {})
    assert params["medseg"]["bundle"]["model_sha256"] == result["sha256_after"]


def test_train_with_too_few_labels_fails_clearly(server: Server, tmp_path: Path) -> None:
    """No final label names ct_abdomen_unet (the MR labels name their model): the task refuses and says why."""
    client = server.client(tmp_path)
    client.train_start("ct_abdomen_unet", {"max_epochs": 1})
    deadline = time.monotonic() + 120
    while (status := client.train_status()).get("status") not in ("DONE", "ERROR"):
        assert time.monotonic() < deadline
        time.sleep(2)
    assert status["status"] == "ERROR"
    assert "labelled image(s) in the datastore; training needs at least 2" in "\n".join(status["details"])
