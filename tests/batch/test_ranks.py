"""Ranks: argument checks, and a real two-rank torchrun run that matches one rank and resumes with one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.batch.ranks import Ranks
from tests.batch.study import CASES, FAST, labels, medseg, records, subprocess_env
from tests.helpers import REPO


@pytest.mark.parametrize(
    ("rank", "world_size", "error", "match"),
    [
        (0, 0, ValueError, r"rank 0 of world_size 0: expected world_size >= 1 and 0 <= rank < world_size"),
        (2, 2, ValueError, r"rank 2 of world_size 2: expected world_size >= 1"),
        (-1, 1, ValueError, r"rank -1 of world_size 1"),
        (True, 1, TypeError, r"rank: expected an int, got bool True"),
        (0, 1.0, TypeError, r"world_size: expected an int, got float 1.0"),
        (0, 2, ValueError, r"world_size 2: a run over several ranks needs torch.distributed initialised"),
    ],
)
def test_ranks_are_checked(rank: Any, world_size: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Ranks(rank, world_size)


def test_one_rank_owns_every_case_and_gathers_plainly() -> None:
    ranks = Ranks(0, 1)
    assert all(ranks.owns(i) for i in range(5))
    assert ranks.gather({"ok": 3}) == [{"ok": 3}]
    ranks.agree(None)
    with pytest.raises(FileNotFoundError, match="no bundle"):
        ranks.agree(FileNotFoundError("no bundle"))


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_rank_and_resume_with_one(tmp_path: Path, study: dict[str, Path]) -> None:
    output = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pipelines", "-q", "batch", str(study["manifest"]), "--bundle", str(study["bundle"]),
               "--output", str(output), "--outputs", ",".join(FAST), "--device", "cpu"]  # fmt: skip
    done = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(CASES)} ok, 0 failed, 0 skipped" in done.stdout and "2 ranks" in done.stdout

    ledger = records(output)
    assert not list(output.glob("ledger.rank*.jsonl"))  # merged by rank 0
    assert sorted(r["case_id"] for r in ledger) == CASES and {r["status"] for r in ledger} == {"ok"}
    # sorted case ids, case i on rank i % 2
    assert {r["case_id"]: r["rank"] for r in ledger} == {c: i % 2 for i, c in enumerate(CASES)}
    reference = {r["case_id"]: r for r in records(study["reference"])}
    for r in ledger:
        assert r["input"] == reference[r["case_id"]]["input"] and r["bundle"] == reference[r["case_id"]]["bundle"]
        np.testing.assert_array_equal(labels(output, r["case_id"]), labels(study["reference"], r["case_id"]))
    assert sorted(p.name.rsplit("-", 1)[1] for p in (output / "logs").glob("batch-*.log")) == ["rank0.log", "rank1.log"]
    assert (output / "report.html").is_file()

    again = subprocess.run(
        medseg(study["manifest"], "--bundle", study["bundle"], "--output", output, "--resume", "--device", "cpu"),
        env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"0 ok, 0 failed, {len(CASES)} skipped" in again.stdout
    assert len(records(output)) == len(CASES)
    shutil.rmtree(output)
