"""The trust boundary: untrusted bundles are refused before any config is parsed; trust is by content."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pipelines.bundles.trust import (
    UntrustedBundleError,
    bundle_digest,
    read_trust_store,
    require_trusted,
    trust_bundle,
    trust_reason,
    trust_store_path,
)
from pipelines.cli.main import main
from tests.helpers import BUNDLES, cube_scan, edit_json, write_nifti, write_threshold_bundle


def _with_flag_expression(bundle: Path, flag: Path) -> Path:
    """Make the bundle's Spacingd pixdim a `$` expression that creates ``flag`` when evaluated."""

    def change(config: dict) -> None:
        config["preprocessing"]["transforms"][3]["pixdim"] = (
            f"$__import__('pathlib').Path(r'{flag}').touch() or [1.5, 1.5, 2.0]"
        )

    edit_json(bundle / "configs" / "inference.json", change)
    return bundle


def test_store_location_env_var_then_xdg_config(tmp_path: Path) -> None:
    assert trust_store_path({"MEDSEG_TRUST_FILE": str(tmp_path / "t.json")}) == tmp_path / "t.json"
    assert trust_store_path({"XDG_CONFIG_HOME": "/cfg"}) == Path("/cfg/medseg/trusted_bundles.json")
    assert trust_store_path({"XDG_CONFIG_HOME": "rel", "HOME": "/h"}) == Path("/h/.config/medseg/trusted_bundles.json")


def test_digest_covers_configs_and_torchscript_not_weights_data(tmp_path: Path) -> None:
    bundle = write_threshold_bundle(tmp_path / "b")
    first = bundle_digest(bundle)
    (bundle / "models" / "model.pt").write_bytes(b"other weights")  # data, loaded with weights_only=True
    assert bundle_digest(bundle) == first
    (bundle / "models" / "model.ts").write_bytes(b"a program")
    second = bundle_digest(bundle)
    assert second != first
    edit_json(bundle / "configs" / "metadata.json", lambda m: m.update(version="0.0.2"))
    assert bundle_digest(bundle) not in (first, second)


def test_a_planted_pyc_voids_trust(tmp_path: Path) -> None:
    """Python may run ``scripts/__pycache__/*.pyc`` instead of the hashed source: compiled code is code."""
    store = tmp_path / "store.json"
    bundle = write_threshold_bundle(tmp_path / "b")
    (bundle / "scripts").mkdir(exist_ok=True)
    (bundle / "scripts" / "helper.py").write_text("VALUE = 1\n")
    trust_bundle(bundle, store)
    cache = bundle / "scripts" / "__pycache__"
    cache.mkdir()
    (cache / f"helper.cpython-{sys.version_info.major}{sys.version_info.minor}.pyc").write_bytes(b"planted code")
    with pytest.raises(UntrustedBundleError, match="it changed since it was trusted"):
        require_trusted(bundle, store)


def test_project_bundles_are_trusted_by_location(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    reason = trust_reason(BUNDLES / "ct_abdomen_unet", store, [BUNDLES])
    assert reason is not None and reason.startswith("under")
    assert trust_reason(BUNDLES / "ct_abdomen_unet", store, []) is None
    assert not store.exists()  # checking writes nothing


def test_untrusted_then_trusted_then_changed(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    bundle = write_threshold_bundle(tmp_path / "b")  # trusted in the session store, not in this one
    with pytest.raises(UntrustedBundleError, match=r"b: refusing to parse this bundle: it is not trusted") as err:
        require_trusted(bundle, store, how="add --trust-bundle")
    assert "`$` expression" in str(err.value) and "`_target_`" in str(err.value)
    assert "add --trust-bundle" in str(err.value) and str(store) in str(err.value)
    record = trust_bundle(bundle, store)
    assert record.sha256 == bundle_digest(bundle) and record.source == "user"
    assert require_trusted(bundle, store).startswith("recorded")
    edit_json(bundle / "configs" / "inference.json", lambda c: c["inferer"].update(overlap=0.5))
    with pytest.raises(UntrustedBundleError, match=r"it changed since it was trusted on .* \(sha256 [0-9a-f]{12}, now"):
        require_trusted(bundle, store)
    trust_bundle(bundle, store)
    assert len(read_trust_store(store)) == 2


def test_a_store_that_is_not_a_store_is_named(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    store.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"store.json: not a medseg trust store .* fix or delete it"):
        read_trust_store(store)


def test_dollar_expression_runs_only_once_trusted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A `$` expression creating a file: refused untrusted, runs trusted, refused once changed (the issue's case)."""
    flag = tmp_path / "flag"
    bundle = _with_flag_expression(write_threshold_bundle(tmp_path / "zoo_threshold"), flag)
    image, affine, _ = cube_scan("RAS")
    scan = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    segment = ["segment", str(scan), "--bundle", str(bundle), "-o", str(tmp_path / "out"), "--device", "cpu"]

    assert main(["bundle", "info", str(bundle)]) == 0  # info reads the configs as data
    assert main(["bundle", "list", str(tmp_path)]) == 0
    assert not flag.exists()

    capsys.readouterr()
    assert main(segment) == 1
    err = capsys.readouterr().err
    # the helper trusted the bundle it wrote; the expression added since is a change
    assert err.count("\n") == 1 and "refusing to parse this bundle: it changed since it was trusted" in err
    assert "--trust-bundle" in err and "`$` expression" in err
    assert not flag.exists() and not (tmp_path / "out").exists()

    assert main([*segment, "--trust-bundle"]) == 0
    assert flag.exists()
    assert main(segment) == 0  # trusted now, without the flag

    flag.unlink()
    edit_json(bundle / "configs" / "inference.json", lambda c: c["inferer"].update(overlap=0.5))
    capsys.readouterr()
    assert main(segment) == 1
    assert "changed since it was trusted" in capsys.readouterr().err
    assert not flag.exists()
    store = trust_store_path(os.environ)
    assert any(r.path == str(bundle.resolve()) for r in read_trust_store(store))


def test_bundle_check_is_refused_untrusted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flag = tmp_path / "flag"
    bundle = _with_flag_expression(write_threshold_bundle(tmp_path / "zoo_threshold"), flag)
    assert main(["bundle", "check", "--quick", str(bundle)]) == 1
    assert "refusing to parse this bundle" in capsys.readouterr().err
    assert not flag.exists()


def _small_bundle(root: Path, index: int) -> Path:
    """A folder with an inference config unique to ``index`` (so its digest is too); nothing is parsed."""
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "inference.json").write_text(f'{{"index": {index}}}')
    return root


def _trust_many(store: str, folders: list[str]) -> None:
    for folder in folders:
        trust_bundle(Path(folder), Path(store))


def test_a_store_write_waits_for_the_lock_and_loses_no_record(tmp_path: Path) -> None:
    """Trusting holds flock on <store>.lock for the whole read-change-write: a second writer waits."""
    import fcntl
    import threading

    store = tmp_path / "conf" / "trusted.json"
    first, second = _small_bundle(tmp_path / "a", 1), _small_bundle(tmp_path / "b", 2)
    trust_bundle(first, store)
    with open(store.with_name("trusted.json.lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # as another process in the middle of its write
        writer = threading.Thread(target=trust_bundle, args=(second, store))
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive()  # blocked on the lock...
        assert [r.path for r in read_trust_store(store)] == [str(first.resolve())]  # ...before reading the store
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert [r.path for r in read_trust_store(store)] == [str(first.resolve()), str(second.resolve())]


@pytest.mark.slow
def test_concurrent_trust_from_several_processes_keeps_every_record(tmp_path: Path) -> None:
    import multiprocessing

    store = tmp_path / "trusted.json"
    groups = [[str(_small_bundle(tmp_path / f"b{g}_{i}", 100 * g + i)) for i in range(8)] for g in range(4)]
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_trust_many, args=(str(store), group)) for group in groups]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    recorded = {r.path for r in read_trust_store(store)}
    assert recorded == {str(Path(folder).resolve()) for group in groups for folder in group}


def test_trust_status_for_bundle_list(tmp_path: Path) -> None:
    from pipelines.bundles.trust import trust_status

    store = tmp_path / "trusted.json"
    mine, fetched = _small_bundle(tmp_path / "mine", 1), _small_bundle(tmp_path / "fetched", 2)
    assert trust_status(BUNDLES / "mri_brain_tumor", store, [BUNDLES]) == "shipped"
    assert trust_status(mine, store, [BUNDLES]) == "untrusted"
    trust_bundle(mine, store)
    trust_bundle(fetched, store, source="download", origin="http://127.0.0.1/x.zip")
    assert trust_status(mine, store) == "trusted" and trust_status(fetched, store) == "downloaded"
    (mine / "configs" / "inference.json").write_text('{"index": 3}')
    assert trust_status(mine, store) == "untrusted"  # changed since it was trusted
