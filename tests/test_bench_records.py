"""scripts/bench/machine.py: what the benchmark and real-scan records write instead of this machine's paths."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "scripts" / "bench"))
from machine import outside_repository, without_machine_paths


def test_paths_under_a_root_become_its_placeholder_the_innermost_root_first(tmp_path: Path) -> None:
    results = tmp_path / "results"
    record = {
        "command": f"python x.py --out {results} --bundle {tmp_path}/copy --manifest {REPO}/data_manifests/a.json",
        "cases": [{"prediction": str(results / "case" / "labels.nii.gz")}, ("kept", 3)],
        "count": 3,
    }
    shown = without_machine_paths(record, {tmp_path: "$BUNDLES", REPO: ".", results: "$RESULTS"})
    assert shown == {
        "command": "python x.py --out $RESULTS --bundle $BUNDLES/copy --manifest ./data_manifests/a.json",
        "cases": [{"prediction": "$RESULTS/case/labels.nii.gz"}, ["kept", 3]],
        "count": 3,
    }
    assert str(tmp_path) not in repr(shown)


def test_a_relative_root_is_matched_only_where_it_resolves(tmp_path: Path, monkeypatch) -> None:
    """A relative folder names no machine: text that merely contains its name stays as it was."""
    monkeypatch.chdir(tmp_path)
    shown = without_machine_paths({"a": f"{tmp_path}/out/x", "b": "routes out"}, {Path("out"): "$OUT"})
    assert shown == {"a": "$OUT/x", "b": "routes out"}


def test_a_folder_inside_the_repository_keeps_no_placeholder_of_its_own(tmp_path: Path) -> None:
    """Only the repository itself and folders outside it get placeholders: inside it, "./..." says where."""
    roots = {REPO: ".", REPO / "scripts" / "bench" / "results": "$JSON_DIR", tmp_path: "$DATA"}
    assert outside_repository(roots, REPO) == {REPO: ".", tmp_path: "$DATA"}
    shown = without_machine_paths(f"{REPO}/scripts/bench/results/r.json", outside_repository(roots, REPO))
    assert shown == "./scripts/bench/results/r.json"
