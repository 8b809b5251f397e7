"""Resuming a batch run: done cases skipped, changed or failed ones rerun, rank shards read, kill -9 survived."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.batch.ledger import LEDGER, latest_records
from pipelines.batch.options import BatchOptions
from pipelines.batch.run import run_batch
from pipelines.io.hashing import sha256_file
from tests.batch.study import CASES, FAST, corrupt, labels, make_study, medseg, phantom, records, subprocess_env
from tests.helpers import REPO


def test_resume_skips_done_cases_and_reruns_changed_or_failed_ones(tmp_path: Path, unet_bundle: Path) -> None:
    ids = ["case_00", "case_01", "case&<2>"]  # a case id with HTML special characters
    manifest = make_study(tmp_path, ids)
    output = tmp_path / "out"
    first = run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=FAST))
    assert (first.ok, first.failed, first.skipped, first.total) == (3, 1, 0, 4)
    assert first.report_html is not None and "case&amp;&lt;2&gt;" in first.report_html.read_text()
    assert "case&<2>" not in first.report_html.read_text()

    with pytest.raises(ValueError, match=r"already holds a batch run \(ledger.jsonl\); add --resume"):
        run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=FAST))

    again = run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=FAST, resume=True))
    assert (again.ok, again.failed, again.skipped, again.failed_earlier) == (0, 0, 3, 1)
    assert again.has_failures and again.failures[0][0] == "corrupt" and len(records(output)) == 4

    phantom(tmp_path / "data" / "case_01", seed=42)  # a new input file (different sha256)
    changed = run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=FAST, resume=True))
    assert (changed.ok, changed.skipped, changed.failed_earlier) == (1, 2, 1)

    retried = run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=FAST, retry_failed=True))
    assert (retried.ok, retried.failed, retried.skipped) == (0, 1, 3)

    phantom(tmp_path / "data" / "fixed", seed=7).replace(tmp_path / "data" / "corrupt.nii.gz")
    fixed = run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=FAST, resume=True))
    assert (fixed.ok, fixed.failed, fixed.skipped, fixed.has_failures) == (1, 0, 3, False)

    ledger = records(output)
    assert [r["case_id"] for r in ledger].count("case_01") == 2
    assert {k: r["status"] for k, r in latest_records(ledger).items()} == dict.fromkeys([*ids, "corrupt"], "ok")

    # An ok case whose input turns bad: recorded failed, and its old outputs are removed.
    corrupt(tmp_path / "data" / "case_00" / "image.nii.gz", tmp_path / "data" / "case_01" / "image.nii.gz")
    broken = run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=FAST, resume=True))
    assert (broken.failed, broken.skipped) == (1, 3) and not (output / "case_00").exists()


def test_resume_reads_rank_shards_and_merges_them(tmp_path: Path, unet_bundle: Path) -> None:
    manifest = make_study(tmp_path, CASES[:2], with_corrupt=False)
    output = tmp_path / "out"
    run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=("labels",)))
    # The ledger's checksums (the writers' and the reader's) are those of the files on disk.
    for record in records(output):
        assert record["input"]["sha256"] == sha256_file(record["input"]["path"])
        for entry in record["outputs"].values():
            assert entry["sha256"] == sha256_file(output / entry["path"]), entry
    # As a killed 2-rank run leaves it: records in a shard, no merged ledger.
    (output / LEDGER).replace(output / "ledger.rank1.jsonl")
    summary = run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=("labels",), resume=True))
    assert (summary.ok, summary.skipped) == (0, 2)
    assert not (output / "ledger.rank1.jsonl").exists() and len(records(output)) == 2

    # An input that went missing (a data drive not mounted) must not cost the case its outputs.
    image = tmp_path / "data" / "case_00" / "image.nii.gz"
    image.replace(image.with_name("moved.nii.gz"))
    summary = run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=("labels",), resume=True))
    assert (summary.ok, summary.failed, summary.skipped) == (0, 0, 2)
    assert (output / "case_00" / "labels.nii.gz").is_file()


def _wait_for_records(output: Path, count: int, process: subprocess.Popen[str], timeout_s: float = 240) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ledger = output / LEDGER
        lines = ledger.read_text().count("\n") if ledger.is_file() else 0
        if lines >= count:
            return lines
        if process.poll() is not None:
            raise AssertionError(f"batch ended (exit {process.returncode}) before {count} cases were done")
        time.sleep(0.02)
    raise AssertionError(f"no {count} ledger records after {timeout_s} s")


@pytest.mark.slow
def test_kill_and_resume_does_every_case_once_with_identical_outputs(tmp_path: Path, study: dict[str, Path]) -> None:
    output = tmp_path / "out"
    command = medseg(study["manifest"], "--bundle", study["bundle"], "--output", output,
                     "--outputs", ",".join(FAST), "--device", "cpu")  # fmt: skip
    env = subprocess_env()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_records(output, 2, process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    before = len(records(output))
    assert 2 <= before < len(CASES)

    refused = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "add --resume" in refused.stderr

    resumed = subprocess.run([*command, "--resume"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(CASES) - before} ok, 0 failed, {before} skipped" in resumed.stdout

    ledger = records(output)
    assert sorted(r["case_id"] for r in ledger) == CASES and {r["status"] for r in ledger} == {"ok"}
    for case_id in CASES:
        np.testing.assert_array_equal(labels(output, case_id), labels(study["reference"], case_id))
    assert not [p for p in output.iterdir() if p.name.startswith(".")]
