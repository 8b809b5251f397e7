"""--fail-on-flags on batch: QC-flagged cases count as failed in the exit status, their results still written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.batch.flags import flagged_cases
from pipelines.cli.main import main
from tests.batch.study import make_study, records
from tests.helpers import edit_json, trust_test_bundle

pytestmark = pytest.mark.slow  # two small batch runs each


def _flagging_bundle(zoo_bundle: Path) -> Path:
    """The threshold bundle, declaring a structure it never finds: every case is QC-flagged."""
    edit_json(
        zoo_bundle / "configs" / "metadata.json",
        lambda m: m.update({"medseg_qc": {"expected_structures": ["kidney"]}}),
    )
    return trust_test_bundle(zoo_bundle)


def test_flagged_cases_fail_the_exit_status_only_with_fail_on_flags(tmp_path: Path, zoo_bundle: Path, capsys) -> None:
    bundle = _flagging_bundle(zoo_bundle)
    manifest = make_study(tmp_path, ["a", "b"], with_corrupt=False)
    base = ["batch", str(manifest), "--bundle", str(bundle), "--device", "cpu", "--outputs", "labels"]

    assert main([*base, "--output", str(tmp_path / "plain")]) == 0  # default: exit 0, verdict in the report
    assert main([*base, "--output", str(tmp_path / "strict"), "--fail-on-flags"]) == 1
    err = capsys.readouterr().err
    assert "QC: 2 case(s) flagged (--fail-on-flags): a, b" in err
    for out in (tmp_path / "plain", tmp_path / "strict"):  # results written either way
        assert [r["status"] for r in records(out)] == ["ok", "ok"]
        assert (out / "a" / "labels.nii.gz").is_file()
        run = json.loads((out / "a" / "run.json").read_text())
        assert run["quality"]["reasons"] == ["kidney: expected by the bundle, not found"]
    assert flagged_cases(tmp_path / "strict") == ["a", "b"]


def test_unflagged_cases_pass_with_fail_on_flags(tmp_path: Path, zoo_bundle: Path) -> None:
    manifest = make_study(tmp_path, ["a"], with_corrupt=False)
    argv = ["batch", str(manifest), "--bundle", str(zoo_bundle), "--device", "cpu", "--outputs", "labels"]
    assert main([*argv, "--output", str(tmp_path / "out"), "--fail-on-flags"]) == 0
    assert flagged_cases(tmp_path / "out") == []
