"""Bundle conformance: does a bundle follow the MONAI Model Zoo conventions medseg relies on?

:func:`check_bundle` answers with a list of problems, each naming the bundle, the file and the key,
e.g. ``bundles/x: configs/metadata.json: missing key 'numpy_version'``. It runs, in order:

``layout``, ``metadata``, ``configs`` (:data:`QUICK_CHECKS`, :mod:`pipelines.bundles.checks`)
    the Model Zoo files exist and every ``configs/*.json`` is valid JSON; the Zoo fields of
    ``metadata.json`` and its ``network_data_format`` (inputs.image, outputs.pred, channel
    definitions that agree with the channel count); each config holds the ids its workflow needs
    (MONAI's required ``InferProperties`` / ``TrainProperties`` plus the ids ``medseg segment``,
    ``medseg train`` and ``medseg evaluate`` use).
``net_in_out``, ``export``, ``run`` (:mod:`pipelines.bundles.network_checks`)
    ``verify_net_in_out`` with the metadata's spec; a TorchScript export that gives the eager
    network's output; plain ``python -m monai.bundle run`` on a tiny volume writes labels on its grid.

The slow checks are skipped, with a note, when the metadata or the inference config is unusable.
Each JSON file is read once per run. This module imports nothing heavy; the network checks
import torch when they run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.bundles.checks import BundleFiles, check_configs, check_layout, check_metadata
from pipelines.bundles.layout import INFERENCE, METADATA
from pipelines.bundles.metadata import InputSpec, input_spec

logger = logging.getLogger(__name__)

__all__ = ["CHECKS", "QUICK_CHECKS", "SLOW_CHECKS", "CheckResult", "check_bundle", "run_checks"]

CHECKS: tuple[str, ...] = ("layout", "metadata", "configs", "net_in_out", "export", "run")
"""Every check, in the order they run."""

QUICK_CHECKS: tuple[str, ...] = ("layout", "metadata", "configs")
"""The checks that only read files (well under a second per bundle)."""

SLOW_CHECKS: tuple[str, ...] = ("net_in_out", "export", "run")
"""The checks that build and run the network (seconds to minutes)."""


@dataclass
class CheckResult:
    """The outcome of :func:`run_checks` on one bundle.

    Attributes:
        bundle: the bundle folder, as given.
        problems: one line per problem (empty when the bundle conforms).
        notes: what the checks could not use as shipped (e.g. random weights without ``models/model.pt``).
        seconds: wall time per check that ran.
    """

    bundle: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _network_spec(files: BundleFiles) -> tuple[InputSpec | None, str]:
    """The metadata's input spec for the network checks, or ``(None, why they cannot run)``."""
    for rel in (METADATA, INFERENCE):
        if not (files.root / rel).is_file():
            return None, f"no {rel}"
        if not files.valid_json(rel):
            return None, f"{rel} is not valid JSON"
    inference = files.json(INFERENCE)
    if not (isinstance(inference, dict) and "network_def" in inference):
        return None, f"{INFERENCE} has no 'network_def'"
    meta = files.json(METADATA)
    try:
        return input_spec(meta if isinstance(meta, dict) else {}, METADATA), ""
    except ValueError as err:
        return None, f"{METADATA} has no usable network_data_format#inputs#image ({err})"


def _slow_checks(
    files: BundleFiles, label: str, device: str, spec: InputSpec, result: CheckResult, run_timeout_s: float
) -> dict[str, Callable[[], list[str]]]:
    """The network checks, ready to run (imports torch; only called when one is wanted and possible)."""
    from pipelines.bundles import network_checks

    return {
        "net_in_out": lambda: network_checks.check_net_in_out(files, label, device),
        "export": lambda: network_checks.check_export(files, label, device, spec, result.notes),
        "run": lambda: network_checks.check_run(files, label, device, spec, result.notes, run_timeout_s),
    }


def run_checks(
    path: str | Path,
    *,
    checks: Iterable[str] = CHECKS,
    device: str = "cpu",
    run_timeout_s: float = 600.0,
) -> CheckResult:
    """Check a bundle folder against the Model Zoo conventions medseg relies on.

    Args:
        path: the bundle folder; messages name it as given.
        checks: which of :data:`CHECKS` to run (in their fixed order). The slow ones (``net_in_out``,
            ``export``, ``run``) are skipped when a quick check found the metadata or the inference
            config unusable.
        device: torch device for the network checks and the ``monai.bundle run`` subprocess.
        run_timeout_s: time limit of the ``monai.bundle run`` subprocess, in seconds.

    Returns:
        A :class:`CheckResult`; its ``problems`` are empty when the bundle conforms.

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: an unknown check name.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: bundle folder does not exist")
    wanted = list(checks)
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        raise ValueError(f"checks {unknown}: expected some of {', '.join(CHECKS)}")
    label = str(path)
    files = BundleFiles(root)
    result = CheckResult(bundle=root)
    runners: dict[str, Callable[[], list[str]]] = {
        "layout": lambda: check_layout(files, label),
        "metadata": lambda: check_metadata(files, label),
        "configs": lambda: check_configs(files, label),
    }
    for name in CHECKS:
        if name not in wanted:
            continue
        if name in SLOW_CHECKS:
            spec, blocker = _network_spec(files)
            if spec is None:
                result.notes.append(f"{name} check skipped: {blocker}")
                continue
            if name not in runners:
                runners.update(_slow_checks(files, label, device, spec, result, run_timeout_s))
        start = time.perf_counter()
        found = runners[name]()
        result.seconds[name] = time.perf_counter() - start
        result.problems += found
        logger.debug("%s: %s check: %d problem(s) in %.1f s", label, name, len(found), result.seconds[name])
    return result


def check_bundle(
    path: str | Path,
    *,
    checks: Iterable[str] = CHECKS,
    device: str = "cpu",
    run_timeout_s: float = 600.0,
) -> list[str]:
    """The problems :func:`run_checks` finds in a bundle; an empty list means the bundle conforms.

    Each problem names the bundle (as given), the file and the key, e.g.
    ``"bundles/x: configs/metadata.json: missing key 'numpy_version'"``.
    """
    return run_checks(path, checks=checks, device=device, run_timeout_s=run_timeout_s).problems
