"""The bundle search path: --bundles folders, the checkout's bundles/, the user folder; names and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.bundles.find import (
    bundles_in,
    default_search_path,
    find_bundle,
    source_bundles_folder,
    user_bundles_folder,
)
from tests.helpers import BUNDLES

SHIPPED = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "inference.json").is_file())


def _bundle(folder: Path, name: str) -> Path:
    """A minimal folder that looks like a bundle (configs/inference.json)."""
    (folder / name / "configs").mkdir(parents=True)
    (folder / name / "configs" / "inference.json").write_text("{}")
    return folder / name


def test_the_source_checkout_folder_is_the_projects_bundles() -> None:
    assert source_bundles_folder() == BUNDLES


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"XDG_DATA_HOME": "/data/home", "HOME": "/home/u"}, "/data/home/medseg/bundles"),
        ({"HOME": "/home/u"}, "/home/u/.local/share/medseg/bundles"),
        ({"XDG_DATA_HOME": "", "HOME": "/home/u"}, "/home/u/.local/share/medseg/bundles"),
        ({"XDG_DATA_HOME": "relative/dir", "HOME": "/home/u"}, "/home/u/.local/share/medseg/bundles"),
    ],
)
def test_user_folder(environ: dict[str, str], expected: str) -> None:
    assert user_bundles_folder(environ) == Path(expected)


def test_search_path_order_without_duplicates(tmp_path: Path) -> None:
    environ = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    user = tmp_path / "xdg" / "medseg" / "bundles"
    assert default_search_path(environ=environ) == [BUNDLES, user]
    mine = tmp_path / "mine"
    assert default_search_path([mine, BUNDLES, mine], environ=environ) == [mine, BUNDLES, user]


def test_a_name_is_found_in_the_first_folder_of_the_search_path_that_holds_it(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _bundle(second, "ct_abdomen_unet")
    _bundle(second, "only_here")
    assert find_bundle("ct_abdomen_unet", [first, second, BUNDLES]) == second / "ct_abdomen_unet"
    assert find_bundle("ct_abdomen_unet", [first, BUNDLES, second]) == BUNDLES / "ct_abdomen_unet"
    assert find_bundle("only_here", [BUNDLES, second]) == second / "only_here"


def test_a_folder_that_exists_is_used_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _bundle(tmp_path / "here", "ct_abdomen_unet")
    assert find_bundle(str(bundle), [BUNDLES]) == bundle
    monkeypatch.chdir(tmp_path / "here")
    assert find_bundle("ct_abdomen_unet", [BUNDLES]) == Path("ct_abdomen_unet")  # the working folder comes first


def test_not_found_lists_the_folders_searched(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as caught:
        find_bundle("no_such_bundle", [BUNDLES, missing])
    message = str(caught.value)
    assert message.startswith("bundle 'no_such_bundle': no such folder here, and no bundle of that name")
    assert f"({BUNDLES}; {missing} (does not exist))" in message and "--bundles DIR" in message


@pytest.mark.parametrize("value", ["some/where", "./x", "~/no_such_bundle_folder_here"])
def test_a_path_that_does_not_exist_is_not_looked_up(tmp_path: Path, value: str) -> None:
    _bundle(tmp_path, "x")
    with pytest.raises(FileNotFoundError, match=f"^{value}: bundle folder does not exist$"):
        find_bundle(value, [tmp_path])


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ValueError, match="bundle: expected a folder path or a bundle name, got an empty string"):
        find_bundle(" ", [BUNDLES])


def test_bundles_in(tmp_path: Path) -> None:
    assert [p.name for p in bundles_in(BUNDLES)] == SHIPPED
    _bundle(tmp_path, "b")
    _bundle(tmp_path, "a")
    (tmp_path / "not_a_bundle" / "configs").mkdir(parents=True)
    (tmp_path / "a_file").write_text("")
    assert bundles_in(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(FileNotFoundError, match="nowhere: bundles folder does not exist"):
        bundles_in(tmp_path / "nowhere")
