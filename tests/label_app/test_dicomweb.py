"""The medseg MONAI Label app over a real PACS: Orthanc with its DICOMweb plugin, on loopback.

One Orthanc (HTTP and DICOM ports free, config and storage in the test's folder) and one MONAI
Label server (``medseg serve --studies http://127.0.0.1:PORT/dicom-web``) for the module; both are
stopped by their PIDs whatever happens. The phantom CT goes into Orthanc with STOW-RS, inference
runs on its SeriesInstanceUID through MONAILabelClient, and the saved final label comes back from
Orthanc (QIDO-RS, WADO-RS) as a DICOM-SEG that references the source series.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import BUNDLES
from tests.label_app.servers import CT_ORGANS, dice, free_port, medseg_serve, stop, wait_until_up

pytestmark = [pytest.mark.label, pytest.mark.slow]

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # dpkg -L orthanc-dicomweb
INSTALL_HINT = "install them with: apt-get install -y orthanc orthanc-dicomweb (.ci/run does)"


@dataclass
class Pacs:
    """A running Orthanc: its DICOMweb root and the phantom CT stored in it."""

    dicomweb: str
    series_uid: str
    study_uid: str
    truth: np.ndarray
    affine: np.ndarray
    label_names: dict[str, int]

    def client(self):
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(url=self.dicomweb)

    def seg_series(self) -> list[str]:
        found = self.client().search_for_series(search_filters={"Modality": "SEG"})
        return [s["0020000E"]["Value"][0] for s in found]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, tmp: Path):
        from monailabel.client import MONAILabelClient

        return MONAILabelClient(self.url, tmpdir=str(tmp))


def _orthanc_installed() -> None:
    missing = [p for p in (ORTHANC, DICOMWEB_PLUGIN) if not Path(p).is_file()]
    if not missing:
        return
    message = f"Orthanc with its DICOMweb plugin is needed ({', '.join(missing)} missing); {INSTALL_HINT}"
    if os.environ.get("MEDSEG_LABEL_TESTS") == "required":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    from dicomweb_client.api import DICOMwebClient
    from pydicom import dcmread

    from pipelines.bundles.bundle import load_bundle
    from pipelines.data.datasets import SEEDS, bundle_label_ids
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_dicom_series

    _orthanc_installed()
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    while dicom_port == http_port:
        dicom_port = free_port()
    config = {
        "Name": "medseg-test",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,  # answers this machine only
        "AuthenticationEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    label_ids = bundle_label_ids(load_bundle(BUNDLES / "ct_abdomen_unet"))
    ct = make_ct_phantom(SEEDS["demo"][0], label_ids=label_ids)
    files = write_dicom_series(ct, root / "ct_series")
    log = root / "orthanc.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{http_port}/system", process, log, "Orthanc")
        dicomweb = f"http://127.0.0.1:{http_port}/dicom-web"
        datasets = [dcmread(f) for f in files]
        for ds in datasets:  # as a scanner sends it (the phantom writer marks its series DERIVED)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        answer = DICOMwebClient(url=dicomweb).store_instances(datasets)  # STOW-RS
        assert not answer.get("FailedSOPSequence"), answer  # Orthanc sends it empty
        assert len(answer.ReferencedSOPSequence) == len(files)
        yield Pacs(
            dicomweb=dicomweb,
            series_uid=str(datasets[0].SeriesInstanceUID),
            study_uid=str(datasets[0].StudyInstanceUID),
            truth=ct.label,
            affine=ct.affine,
            label_names=dict(label_ids),
        )
    finally:
        stop(process)
    assert process.poll() is not None


@pytest.fixture(scope="module")
def server(pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("label-dicomweb")
    bundles = root / "bundles"
    shutil.copytree(
        BUNDLES / "ct_abdomen_unet",
        bundles / "ct_abdomen_unet",
        ignore=shutil.ignore_patterns("last_checkpoint_*", "eval"),
    )
    with medseg_serve(root, pacs.dicomweb, bundles) as served:
        yield Server(served.url, served.process, served.log)


@pytest.fixture(scope="module")
def inferred(server: Server, pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The CT bundle's answer for the stored series, asked by its SeriesInstanceUID."""
    tmp = tmp_path_factory.mktemp("infer")
    out, params = server.client(tmp).infer("ct_abdomen_unet", pacs.series_uid, {})
    return Path(out), params


def test_the_series_is_listed_from_the_pacs(server: Server, pacs: Pacs, tmp_path: Path) -> None:
    assert server.client(tmp_path).next_sample("first", {})["id"] == pacs.series_uid


def test_inference_by_series_uid_matches_the_phantom_on_its_grid(pacs: Pacs, inferred: tuple[Path, dict]) -> None:
    out, params = inferred
    label = nib.load(out)
    assert label.shape == pacs.truth.shape
    np.testing.assert_allclose(label.affine, pacs.affine, atol=1e-3)
    predicted = np.asarray(label.dataobj)
    assert params["label_names"] == {k: v for k, v in pacs.label_names.items() if v != 0}
    for organ in CT_ORGANS:
        assert dice(predicted == pacs.label_names[organ], pacs.truth == pacs.label_names[organ]) >= 0.9, organ
    assert (
        params["medseg"]["bundle"]["version"]
        == json.loads((BUNDLES / "ct_abdomen_unet/configs/metadata.json").read_text())["version"]
    )


@pytest.mark.parametrize(
    ("image", "status"),
    [("1.2.826.0.1.3680043.8.498.999999", 404), ("../../etc/passwd", 400), ("not-a-uid", 400)],
)
def test_unknown_or_malformed_series_are_refused(server: Server, tmp_path: Path, image: str, status: int) -> None:
    from monailabel.client.client import MONAILabelClientException

    with pytest.raises(MONAILabelClientException, match=f"Status: {status};"):
        server.client(tmp_path).infer("ct_abdomen_unet", image, {})


def test_final_label_goes_back_to_the_pacs_as_dicom_seg(
    server: Server, pacs: Pacs, inferred: tuple[Path, dict], tmp_path: Path
) -> None:
    import highdicom as hd

    out, _ = inferred
    before = set(pacs.seg_series())
    answer = server.client(tmp_path).save_label(
        pacs.series_uid, str(out), tag="final", params={"model": "ct_abdomen_unet"}
    )
    new = set(pacs.seg_series()) - before
    assert len(new) == 1, f"expected one new SEG series on Orthanc, got {new} (answer {answer})"
    seg_uid = new.pop()

    client = pacs.client()
    instances = client.retrieve_series(pacs.study_uid, seg_uid)  # WADO-RS
    assert len(instances) == 1
    seg = instances[0]
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == pacs.study_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pacs.series_uid
    names = {s.SegmentLabel for s in seg.SegmentSequence}
    assert set(CT_ORGANS) <= names

    # The SEG's content is the saved label, frame by frame against the source instances.
    source = sorted(client.retrieve_series(pacs.study_uid, pacs.series_uid), key=lambda d: int(d.InstanceNumber))
    uids = [str(d.SOPInstanceUID) for d in source]
    pixels = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        uids, combine_segments=True, relabel=True, assert_missing_frames_are_empty=True
    )
    number_to_name = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    predicted = np.asarray(nib.load(out).dataobj)
    for number, name in number_to_name.items():
        in_seg = pixels == number  # (k, j, i)
        in_label = (predicted == pacs.label_names[name]).transpose(2, 1, 0)
        assert np.array_equal(in_seg, in_label), name


def test_a_label_off_the_series_grid_is_refused_and_nothing_is_stored(
    server: Server, pacs: Pacs, inferred: tuple[Path, dict], tmp_path: Path
) -> None:
    from monailabel.client.client import MONAILabelClientException

    out, _ = inferred
    label = nib.load(out)
    cropped = tmp_path / "cropped.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[:-4], label.affine), cropped)
    before = set(pacs.seg_series())
    with pytest.raises(MONAILabelClientException, match=r"Status: 422;.*not the grid of series"):
        server.client(tmp_path).save_label(pacs.series_uid, str(cropped), tag="final", params={})
    assert set(pacs.seg_series()) == before
