"""BatchOptions and BatchSummary: checked options, derived figures, and a module light enough for the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.batch.options import BatchOptions, BatchSummary
from tests.helpers import REPO


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "train"}, r"split 'train': expected one of test, all, training, validation"),
        ({"queue_size": 0}, r"queue_size: expected an integer >= 1, got 0"),
    ],
)
def test_batch_options_are_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BatchOptions(**kwargs)


def test_outputs_as_one_string_is_refused() -> None:
    with pytest.raises(TypeError, match=r"outputs: expected a tuple of output names, got the string 'labels,stats'"):
        BatchOptions(outputs="labels,stats")  # type: ignore[arg-type]


def test_summary_figures() -> None:
    summary = BatchSummary(Path("o"), total=10, ok=4, failed=2, skipped=3, failed_earlier=1, wall_seconds=30.0)
    assert summary.processed == 6 and summary.cases_per_minute == 12.0 and summary.has_failures
    idle = BatchSummary(Path("o"), total=1, ok=0, failed=0, skipped=1, failed_earlier=0, wall_seconds=0.0)
    assert idle.cases_per_minute == 0.0 and not idle.has_failures
    assert BatchOptions(retry_failed=True).resuming and not BatchOptions().resuming


def test_options_and_the_batch_parser_import_no_heavy_library() -> None:
    script = (
        "import sys\n"
        "import pipelines.batch.options, pipelines.cli.batch\n"
        "print(sorted(m for m in ('torch', 'numpy', 'monai', 'nibabel') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]", done.stdout
