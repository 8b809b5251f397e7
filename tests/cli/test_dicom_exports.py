"""DICOM exports end to end through the command line: ls, manifest create --dicom, batch, segment;
and no patient identifiers in any output, log or terminal line of a run without --keep-identifiers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydicom
import pytest

from pipelines.cli.main import main
from tests.dicom_export import IDENTIFIERS, Export

CT_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "ct_abdomen_unet"


@pytest.fixture(scope="module")
def export(dicom_export: Export) -> Export:
    return dicom_export


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and the terminal: stdout, then stderr (where the log goes)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + "\n--stderr--\n" + err


def _leaks(text: str) -> list[str]:
    return [i for i in IDENTIFIERS if i.lower() in text.lower()]


def test_dicom_ls_table_and_json(export: Export, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(tmp_path / "key")
    code, text = _run(capsys, "dicom", "ls", str(export.root), "--bundle", str(CT_BUNDLE), "--id-key", key)
    assert code == 0, text
    assert not _leaks(text), text
    assert "files skipped: 1 DICOMDIR, 4 SR, 1 not DICOM" in text
    assert len(re.findall(r"^patient-[0-9a-f]{8}$", text, re.M)) == 2
    assert len(re.findall(r"^  study-[0-9a-f]{12}  ", text, re.M)) == 4
    assert text.count("orientation coronal not axial") == 4 and text.count("->") == 4
    thin = export.study(1, 1)["thin"]
    assert re.search(rf"->\s+3  {thin}  CT   20230103  Abdomen 2.5 B30f .* 64 +5x5 +2.5 +2.5  axial", text)

    code, text = _run(capsys, "dicom", "ls", str(export.zipped), "--json", "--bundle", str(CT_BUNDLE), "--id-key", key)
    listing = json.loads(text.split("\n--stderr--\n")[0])
    assert code == 0 and listing["kind"] == "zip" and listing["skipped_files"] == {"SR": 1}
    (study,) = listing["patients"][0]["studies"]
    assert study["selected"] == export.study(1, 2)["thin"] and study["rule"].startswith("axial CT")
    by_number = {s["series_number"]: s for s in study["series"]}
    assert by_number[2]["reason"].endswith("series 3 preferred (kernel /^(B[1-4][0-9]|Br[1-4][0-9]|I[1-4][0-9]|"
                                           "STANDARD|SOFT|FC0[0-9])/, thinnest, most slices)")  # fmt: skip
    assert "patient_id" not in by_number[2] and not _leaks(text)

    code, text = _run(capsys, "dicom", "ls", str(export.zipped), "--keep-identifiers", "--id-key", key)
    assert code == 0 and "ID PIDX48213Q, DOEWICZ^JANEKA, born 19610412" in text


def test_manifest_batch_and_dicom_seg_without_identifiers(
    export: Export, zoo_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(tmp_path / "key")
    manifest = export.root.parent / "dataset.json"
    code, text = _run(capsys, "manifest", "create", "--dicom", str(export.root), "--bundle", str(CT_BUNDLE),
                      "--output", str(manifest), "--id-key", key)  # fmt: skip
    assert code == 0 and "4 test cases from 4 studies" in text, text
    document = json.loads(manifest.read_text())
    cases = {c["series_uid"]: c for c in document["test"]}
    assert set(cases) == {s["thin"] for s in export.studies}  # one case per study, its thin series
    assert all(re.fullmatch(r"study-[0-9a-f]{12}", c["case_id"]) for c in cases.values())
    assert cases[export.study(2, 2)["thin"]]["image"].startswith("export/P2/ST2/")  # written through the DICOMDIR
    assert document["medseg_dicom"]["identifiers_kept"] is False and not _leaks(manifest.read_text())
    rule = "axial CT, >= 16 slices, <= 5 mm"  # the CT bundle's, kept per case for run.json
    first = export.study(1, 1)
    chosen = cases[first["thin"]]["series_selection"]
    assert chosen["rule"] == rule and chosen["rules_source"].endswith("metadata.json (medseg_series_rules)")
    assert chosen["skipped"][first["coronal"]] == f"rule '{rule}': orientation coronal not axial"
    assert set(chosen["skipped"]) == {first[k] for k in ("localizer", "thick", "coronal", "derived")}
    # manifest validate reads these images as the batch will: the study's series by UID, from headers
    code, text = _run(capsys, "manifest", "validate", str(manifest))
    assert code == 0 and f"{manifest}: OK" in text, text
    # the same key gives the same case ids
    _run(capsys, "manifest", "create", "--dicom", str(export.root), "--output", str(tmp_path / "again.json"),
         "--id-key", key)  # fmt: skip
    assert {c["case_id"] for c in json.loads((tmp_path / "again.json").read_text())["test"]} == {
        c["case_id"] for c in cases.values()
    }
    # a study whose only series is a localizer: a per-case failure in the batch, not a crash
    document["test"].append({"case_id": "localizer-only", "image": "export/P1/ST1/localizer"})
    manifest.write_text(json.dumps(document))

    out = tmp_path / "out"
    code, text = _run(capsys, "batch", str(manifest), "--bundle", str(zoo_bundle), "--output", str(out),
                      "--device", "cpu", "--no-progress")  # fmt: skip
    assert code == 1, text
    assert "batch: 4 ok, 1 failed" in text and "localizer-only: " in text and "no series satisfies" in text
    assert not _leaks(text), text
    for series_uid, case in cases.items():
        run = json.loads((out / case["case_id"] / "run.json").read_text())
        assert run["input"]["series_uid"] == series_uid and run["identifiers_kept"] is False
        selection = run["input"]["series_selection"]
        assert selection["study_uid"] in {s["study_uid"] for s in export.studies}
        # the rule that chose the series when the manifest was made, not '--series-uid'
        assert selection["rule"] == rule and selection["chosen_at"] == "manifest"
        assert selection["skipped"] == case["series_selection"]["skipped"] and selection["series_uid"] == series_uid
        seg = pydicom.dcmread(out / case["case_id"] / "seg.dcm")
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
        # DICOM-SEG copies the patient module of its source (documented): the one file that names the patient
        assert str(seg.PatientID) in {"PIDX48213Q", "PIDX77102Z"}
    files = [p for p in out.rglob("*") if p.is_file() and p.name != "seg.dcm"]
    assert any(p.suffix == ".log" for p in files) and any(p.name == "report.html" for p in files)
    for path in files:
        data = path.read_bytes().lower()
        assert not [i for i in IDENTIFIERS if i.lower().encode() in data], path


def test_all_matching_case_id_templates_and_a_batch_that_does_not_keep_identifiers(
    export: Export, zoo_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, target = str(tmp_path / "key"), str(tmp_path / "m.json")
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"name": "axial originals", "image_type_all": ["ORIGINAL"],
                                            "image_type_none": ["LOCALIZER"], "orientation": ["axial"]}]}))  # fmt: skip
    code, text = _run(capsys, "manifest", "create", "--dicom", str(export.zipped), "--series-rules", str(rules),
                      "--all-matching", "--output", target, "--id-key", key)  # fmt: skip
    assert code == 0, text
    cases = json.loads(Path(target).read_text())["test"]
    study = export.study(1, 2)
    assert {c["series_uid"] for c in cases} == {study["thin"], study["thick"]}
    assert all(
        c["image"].endswith("study.zip") and re.fullmatch(r"study-\w{12}-series-\w{12}", c["case_id"]) for c in cases
    )

    code, text = _run(capsys, "manifest", "create", "--dicom", str(export.zipped), "--case-id-template",
                      "{patient_id}-{series_number}", "--output", target, "--id-key", key)  # fmt: skip
    assert code == 1 and "uses patient_id, which identify the patient; pass --keep-identifiers" in text
    template = ["--case-id-template", "{patient_id}-{series_number}"]
    kept = export.root.parent / "kept.json"  # beside the export: its paths stay inside the manifest's folder
    code, text = _run(capsys, "manifest", "create", "--dicom", str(export.zipped), *template, "--keep-identifiers",
                      "--output", str(kept), "--id-key", key)  # fmt: skip
    assert code == 0 and json.loads(kept.read_text())["test"][0]["case_id"] == "PIDX48213Q-3"
    # a batch that does not keep identifiers refuses it before reading any case; with the flag it runs
    out = tmp_path / "out"
    run = ["batch", str(kept), "--bundle", str(zoo_bundle), "--output", str(out), "--device", "cpu", "--no-progress"]
    code, text = _run(capsys, *run)
    assert code == 1 and "made by 'manifest create --dicom --keep-identifiers'" in text, text
    assert "pass --keep-identifiers to batch" in text and not _leaks(text)
    assert not (out / "PIDX48213Q-3").exists() and not (out / "ledger.jsonl").exists()
    code, text = _run(capsys, *run, "--keep-identifiers")
    assert code == 0 and json.loads((out / "PIDX48213Q-3" / "run.json").read_text())["identifiers_kept"] is True


def test_segment_a_zip_records_the_rule_and_refuses_a_whole_export(
    export: Export, zoo_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"name": "thin", "thickness_mm": {"max": 3}, "orientation": ["axial"],
                                            "image_type_none": ["LOCALIZER", "DERIVED"]}]}))  # fmt: skip
    out = tmp_path / "out"
    common = ["--bundle", str(zoo_bundle), "--output", str(out), "--device", "cpu", "--series-rules", str(rules)]
    key = str(tmp_path / "key")
    code, text = _run(capsys, "segment", str(export.root), *common, "--id-key", key)
    assert code == 1 and "holds 2 patients in 4 studies" in text and not _leaks(text)
    assert not out.exists() or not any(out.iterdir())
    # one line, the patients and studies by the pseudonyms 'dicom ls' shows with the same key, and how to choose
    (line,) = [t for t in text.splitlines() if t.startswith("medseg: error:")]
    _, listing = _run(capsys, "dicom", "ls", str(export.root), "--json", "--id-key", key)
    listing = json.loads(listing.split("\n--stderr--\n")[0])
    expected = "; ".join(
        f"{p['patient']}: " + ", ".join(f"{s['study']} ({len(s['series'])} series)" for s in p["studies"])
        for p in listing["patients"]
    )
    assert f"Patients: {expected}." in line and "(5 series)" in line
    assert f"'medseg dicom ls {export.root}'" in line and "--series-uid UID" in line
    assert f"'medseg manifest create --dicom {export.root}' then 'medseg batch'" in line
    code, text = _run(capsys, "segment", str(export.zipped), *common)
    assert code == 0, text
    run = json.loads((out / "study" / "run.json").read_text())
    study = export.study(1, 2)
    selection = run["input"]["series_selection"]
    assert selection["series_uid"] == study["thin"] and selection["rule"] == "thin"
    assert selection["skipped"][study["thick"]] == "rule 'thin': thickness 5 mm > 3 mm"
    assert selection["skipped_files"] == {"SR": 1} and run["identifiers_kept"] is False


def test_manifest_validate_reads_zips_dicomdirs_and_study_folders_from_headers(
    export: Export, capsys: pytest.CaptureFixture[str]
) -> None:
    """Images as 'manifest create --dicom' writes them (and as a person may): header only, series_uid
    checked present, grids checked against a label."""
    import nibabel as nib
    import numpy as np

    from pipelines.io.readers import read_volume

    folder = export.root.parent
    zipped, dicomdir, study = export.study(1, 2), export.study(2, 2), export.study(2, 1)
    thin = read_volume(export.zipped, series_uid=zipped["thin"])
    label = folder / "thin_label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(thin.shape, np.uint8), thin.affine), label)
    wrong = folder / "wrong_label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 32), np.uint8), thin.affine), wrong)
    entries = [
        {"case_id": "zip", "image": "study.zip", "series_uid": zipped["thin"], "label": label.name},
        {"case_id": "dicomdir", "image": "export/P2/ST2/DICOMDIR", "series_uid": dicomdir["coronal"]},
        {"case_id": "study", "image": "export/P2/ST1", "series_uid": study["thick"]},
        {"case_id": "rules", "image": "export/P2/ST1"},  # no series_uid: the default rules choose
        {"case_id": "absent", "image": "export/P2/ST1", "series_uid": zipped["thin"]},
        {"case_id": "grid", "image": "study.zip", "series_uid": zipped["thin"], "label": wrong.name},
        {"case_id": "patients", "image": "export"},
    ]
    manifest = folder / "validate.json"
    manifest.write_text(json.dumps({"name": "x", "modality": "CT", "labels": {"0": "background"}, "test": entries}))
    code, text = _run(capsys, "manifest", "validate", str(manifest))
    problems = [line for line in text.splitlines() if line.startswith("case ")]
    assert code == 1 and len(problems) == 3, text
    assert (
        f"case absent: {study['folder']}: cannot read image: no series with SeriesInstanceUID {zipped['thin']}"
        in (problems[0])
    )
    assert problems[1].startswith("case grid: ") and "label grid shape (16, 16, 32)" in problems[1]
    assert "case patients: " in problems[2] and "holds 2 patients in 4 studies" in problems[2]
    assert not _leaks(text)
