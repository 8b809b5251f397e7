"""``medseg serve`` before the server starts: the label environment check, the command it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.label_app.checks import overrides_setting
from pipelines.label_app.server import (
    LabelEnvironmentMissing,
    ServeOptions,
    check_overrides,
    monailabel_executable,
    server_command,
    write_app_dir,
)
from tests.helpers import BUNDLES, REPO


def test_missing_label_environment_says_how_to_create_it(tmp_path: Path) -> None:
    python = tmp_path / "bin" / "python"
    with pytest.raises(LabelEnvironmentMissing, match=r"bash scripts/setup_label.sh.*\.venv-label/bin/medseg serve"):
        monailabel_executable(python)


@pytest.mark.skipif(Path(sys.executable).with_name("monailabel").is_file(), reason="MONAI Label is installed here")
def test_serve_in_the_core_environment_fails_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "serve", "--studies", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "setup_label.sh" in done.stderr


def test_server_command_binds_loopback_and_passes_the_app_settings(tmp_path: Path) -> None:
    options = ServeOptions(studies=str(tmp_path / "studies"), bundles=BUNDLES, app_dir=tmp_path / "app", port=8123)
    command, env = server_command(options, Path("/x/monailabel"))
    assert command[:2] == ["/x/monailabel", "start_server"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "8123"
    confs = {command[i + 1]: command[i + 2] for i, c in enumerate(command) if c == "--conf"}
    assert confs["bundles"] == str(BUNDLES.resolve())
    assert confs["upload_dir"] == env["TMPDIR"] == str((tmp_path / "app" / "tmp").resolve())


def test_app_folder_holds_a_thin_main(tmp_path: Path) -> None:
    app = write_app_dir(tmp_path / "app")
    text = (app / "main.py").read_text()
    assert "from pipelines.label_app.app import MedsegLabelApp" in text
    assert len(text.splitlines()) < 6


@pytest.mark.parametrize(
    ("change", "message"),
    [({"port": 0}, "port 0"), ({"max_epochs": 0}, "max_epochs 0"), ({"limit_concurrency": 1}, "limit_concurrency")],
)
def test_bad_options_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServeOptions(studies=str(tmp_path), bundles=BUNDLES, app_dir=tmp_path, **change)


def test_overrides_reach_the_app_as_one_json_setting(tmp_path: Path) -> None:
    overrides = {"inferer#overlap": 0.25, "inferer#sw_batch_size": 2}
    options = ServeOptions(studies=str(tmp_path), bundles=BUNDLES, app_dir=tmp_path / "app", overrides=overrides)
    command, _ = server_command(options, Path("/x/monailabel"))
    confs = {command[i + 1]: command[i + 2] for i, c in enumerate(command) if c == "--conf"}
    assert overrides_setting(confs["overrides"]) == overrides  # what the app reads back
    plain, _ = server_command(ServeOptions(studies=str(tmp_path), bundles=BUNDLES, app_dir=tmp_path), Path("/x/m"))
    assert "overrides" not in plain


@pytest.mark.parametrize("value", ["[1, 2]", "{not json", '"text"'])
def test_an_overrides_setting_that_is_not_a_json_object_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="expected a JSON object of config ids"):
        overrides_setting(value)


def test_an_override_id_a_served_bundle_lacks_is_refused_before_the_start() -> None:
    check_overrides(BUNDLES / "ct_abdomen_unet", {"inferer#overlap": 0.25})  # an id the config holds
    check_overrides(BUNDLES / "ct_abdomen_unet", {})
    with pytest.raises(ValueError, match="inferer#overlapp"):
        check_overrides(BUNDLES / "ct_abdomen_unet", {"inferer#overlapp": 0.25})
