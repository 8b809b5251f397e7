"""The load stage's hashing and resume decisions, and the ledger's output checksums (fake segmenter, no model)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import pipelines.batch.pipeline
from pipelines.batch.options import BatchOptions
from pipelines.batch.pipeline import Pipeline, output_entries
from pipelines.batch.ranks import Ranks
from pipelines.data.manifests.model import Case
from pipelines.io.hashing import input_sha256, sha256_file

MODEL = "m" * 64


class FakeSegmenter:
    """Reads the input's bytes; a file starting with ``bad`` fails to read, as a truncated image does."""

    device = "cpu"
    precision = "fp32"

    def __init__(self, hashes_while_reading: bool = True) -> None:
        self.hashes_while_reading = hashes_while_reading
        self.reads: list[Path] = []

    def outputs_for(self, path: Path) -> tuple[str, ...]:
        return ("labels",)

    def prepare(self, path: Path | tuple[Path, ...], series_uid: str | None = None) -> Any:
        self.reads.append(path)
        if isinstance(path, tuple):  # one image per channel: the real one checks and stacks them
            return SimpleNamespace(volume=SimpleNamespace(sha256=input_sha256(path)), seconds={"load": 0.0})
        data = path.read_bytes()
        if data.startswith(b"bad"):
            raise ValueError(f"{path}: truncated or corrupt image data")
        sha256 = hashlib.sha256(data).hexdigest() if self.hashes_while_reading else None
        return SimpleNamespace(volume=SimpleNamespace(sha256=sha256), seconds={"load": 0.0})


@pytest.fixture()
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every separate hash of an input the load stage makes."""
    calls: list[Any] = []

    def counted(paths: Any) -> str:
        calls.append(paths)
        return input_sha256(paths)

    monkeypatch.setattr(pipelines.batch.pipeline, "input_sha256", counted)
    return calls


def _pipeline(
    tmp_path: Path, segmenter: FakeSegmenter, state: dict[str, Any] | None = None, **options: Any
) -> Pipeline:
    return Pipeline(
        segmenter,  # type: ignore[arg-type]
        tmp_path / "out",
        {"name": "b", "version": "1", "model_sha256": MODEL},
        BatchOptions(**options),
        Ranks(0, 1),
        tmp_path / "out" / "ledger.jsonl",
        state or {},
        lambda text: None,
    )


def _case(tmp_path: Path, content: bytes | None = b"image") -> Case:
    path = tmp_path / "a.nii.gz"
    if content is not None:
        path.write_bytes(content)
    return Case("a", path, None, "test")


def _previous(status: str, sha256: str | None, model: str = MODEL) -> dict[str, Any]:
    return {"case_id": "a", "status": status, "error": "earlier error", "input": {"sha256": sha256},
            "bundle": {"model_sha256": model}}  # fmt: skip


def test_a_new_case_takes_its_hash_from_the_read(tmp_path: Path, hash_calls: list[Any]) -> None:
    segmenter = FakeSegmenter()
    case = _case(tmp_path)
    item = _pipeline(tmp_path, segmenter).prepare(0, case)
    assert item.error is None and item.skip is None and item.prepared is not None
    assert item.sha256 == hashlib.sha256(b"image").hexdigest() and item.hash_seconds == 0.0
    assert hash_calls == [] and segmenter.reads == [case.image]  # one read, no separate hash


def test_a_reader_without_a_hash_is_hashed_after_the_read(tmp_path: Path, hash_calls: list[Any]) -> None:
    item = _pipeline(tmp_path, FakeSegmenter(hashes_while_reading=False)).prepare(0, _case(tmp_path))
    assert item.sha256 == hashlib.sha256(b"image").hexdigest() and len(hash_calls) == 1


def test_an_unreadable_new_case_is_hashed_for_its_failed_record(tmp_path: Path, hash_calls: list[Any]) -> None:
    case = _case(tmp_path, b"bad bytes")
    item = _pipeline(tmp_path, FakeSegmenter()).prepare(0, case)
    assert item.error == f"{case.image}: truncated or corrupt image data" and item.trace
    # resume tells an unchanged bad input (failed earlier) from a fixed one by this hash
    assert item.sha256 == sha256_file(case.image) and len(hash_calls) == 1


def test_a_missing_new_case_fails_with_its_path(tmp_path: Path, hash_calls: list[Any]) -> None:
    case = _case(tmp_path, None)
    item = _pipeline(tmp_path, FakeSegmenter()).prepare(0, case)
    assert item.error is not None and str(case.image) in item.error and item.sha256 is None


def test_a_done_case_is_hashed_and_never_read(tmp_path: Path, hash_calls: list[Any]) -> None:
    segmenter = FakeSegmenter()
    case = _case(tmp_path)
    state = {"a": _previous("ok", sha256_file(case.image))}
    item = _pipeline(tmp_path, segmenter, state, resume=True).prepare(0, case)
    assert item.skip == "done" and item.prepared is None and segmenter.reads == [] and len(hash_calls) == 1


@pytest.mark.parametrize("changed", ["input", "model"])
def test_a_changed_case_runs_again_after_a_hash_and_a_read(tmp_path: Path, hash_calls: list[Any], changed: str) -> None:
    segmenter = FakeSegmenter()
    case = _case(tmp_path)
    sha256 = "0" * 64 if changed == "input" else sha256_file(case.image)
    state = {"a": _previous("ok", sha256, MODEL if changed == "input" else "x" * 64)}
    item = _pipeline(tmp_path, segmenter, state, resume=True).prepare(0, case)
    assert item.skip is None and item.prepared is not None and item.sha256 == sha256_file(case.image)
    assert len(hash_calls) == 1 and segmenter.reads == [case.image]  # the input is read twice: hash, then read


def test_a_case_done_earlier_whose_input_went_missing_is_kept(tmp_path: Path, hash_calls: list[Any]) -> None:
    state = {"a": _previous("ok", "0" * 64)}
    item = _pipeline(tmp_path, FakeSegmenter(), state, resume=True).prepare(0, _case(tmp_path, None))
    assert item.skip == "done" and item.sha256 is None and item.error is None


@pytest.mark.parametrize(("retry_failed", "skip"), [(False, "failed-earlier"), (True, None)])
def test_a_case_that_failed_on_the_same_input(
    tmp_path: Path, hash_calls: list[Any], retry_failed: bool, skip: str | None
) -> None:
    case = _case(tmp_path, b"bad bytes")
    state = {"a": _previous("failed", sha256_file(case.image))}
    item = _pipeline(tmp_path, FakeSegmenter(), state, resume=True, retry_failed=retry_failed).prepare(0, case)
    assert item.skip == skip and len(hash_calls) == 1
    assert item.previous_error == ("earlier error" if skip else None)
    assert (item.error is None) == (skip is not None)  # a retried bad input fails again, hashed only once


def test_a_case_with_several_images_passes_them_all_as_channels(tmp_path: Path) -> None:
    (tmp_path / "t1.nii.gz").write_bytes(b"1")
    (tmp_path / "t2.nii.gz").write_bytes(b"2")
    case = Case("a", (tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz"), None, "test")
    segmenter = FakeSegmenter()
    item = _pipeline(tmp_path, segmenter).prepare(0, case)
    assert item.error is None and segmenter.reads == [case.image_paths]  # in the manifest's order
    assert item.sha256 == input_sha256(case.image_paths)


def test_output_checksums_come_from_the_writers(tmp_path: Path) -> None:
    output = tmp_path / "out"
    (output / "a").mkdir(parents=True)
    (output / "a" / "stats.json").write_text("[]")
    result = SimpleNamespace(
        files={"labels": output / "a" / "labels.nii.gz", "stats_json": output / "a" / "stats.json"},
        sha256={"labels": "f" * 64},  # labels.nii.gz does not exist: reading it back would fail
    )
    assert output_entries(result, output) == {  # type: ignore[arg-type]
        "labels": {"path": "a/labels.nii.gz", "sha256": "f" * 64},
        "stats_json": {"path": "a/stats.json", "sha256": sha256_file(output / "a" / "stats.json")},
    }
