"""Bundle conformance: ``medseg bundle check``, in two parts.

:func:`run_checks` answers with a list of problems, each naming the bundle, the file and the key,
e.g. ``bundles/x: configs/metadata.json: missing key 'numpy_version' (required by meta_schema_20240725.json)``.
The checks form two parts (:data:`PARTS`):

``zoo``: what the Model Zoo's CI requires (:mod:`~pipelines.bundles.zoo`, :mod:`~pipelines.bundles.network_checks`)
    ``zoo_files`` (LICENSE, metadata, inference config, weights), ``zoo_metadata`` (version and
    changelog, the keys and types of the metadata schema the bundle names), ``net_in_out``
    (``verify_net_in_out`` with the metadata's spec) and ``export`` (TorchScript export that gives
    the eager network's output; a shipped ``models/model.ts`` must load). A real Zoo bundle passes.
``medseg``: what ``medseg segment/batch/train/evaluate`` additionally need (:mod:`pipelines.bundles.checks`)
    ``layout`` (logging config, model card, train.json under evaluate.json), ``metadata`` (the
    channel and label definitions medseg reads), ``configs`` (each config holds the ids its
    workflow needs, each message saying which command would fail and why; evaluate.json's label
    clean-up is the inference config's, so that evaluation scores what is shipped) and ``run`` (plain
    ``python -m monai.bundle run`` on a tiny volume writes labels on its grid).

Every check runs isolated: one that raises (a network that cannot be built, a config MONAI cannot
parse) becomes one problem line and the others still run. The network checks are skipped, with a
note, when the metadata or the inference config is unusable. Each JSON / YAML file is read once per
run. The inference config may be ``configs/inference.json``, ``.yaml`` or ``.yml``, as MONAI accepts;
``overrides`` (``medseg bundle check --override KEY=VALUE``) apply to it in every check that parses
it, exactly as ``medseg segment`` applies them, and an override of an id it does not hold is refused
before any check runs.
This module imports nothing heavy; the network checks import torch when they run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.bundles.bundle import config_parser
from pipelines.bundles.checks import BundleFiles, check_configs, check_layout, check_metadata, first_line
from pipelines.bundles.layout import METADATA
from pipelines.bundles.metadata import InputSpec, input_spec
from pipelines.bundles.zoo import check_zoo_files, check_zoo_metadata

logger = logging.getLogger(__name__)

__all__ = ["CHECKS", "PARTS", "QUICK_CHECKS", "SLOW_CHECKS", "CheckResult", "check_bundle", "run_checks"]

CHECKS: tuple[str, ...] = (
    "zoo_files",
    "zoo_metadata",
    "layout",
    "metadata",
    "configs",
    "net_in_out",
    "export",
    "run",
)
"""Every check, in the order they run."""

PARTS: dict[str, tuple[str, ...]] = {
    "zoo": ("zoo_files", "zoo_metadata", "net_in_out", "export"),
    "medseg": ("layout", "metadata", "configs", "run"),
}
"""The two parts of a check: what the Model Zoo requires, and what medseg's commands additionally need."""

QUICK_CHECKS: tuple[str, ...] = ("zoo_files", "zoo_metadata", "layout", "metadata", "configs")
"""The checks that only read files (well under a second per bundle)."""

SLOW_CHECKS: tuple[str, ...] = ("net_in_out", "export", "run")
"""The checks that build and run the network (seconds to minutes)."""


def part_of(check: str) -> str:
    """``"zoo"`` or ``"medseg"``: the part a check belongs to."""
    return next(part for part, names in PARTS.items() if check in names)


@dataclass
class CheckResult:
    """The outcome of :func:`run_checks` on one bundle.

    Attributes:
        bundle: the bundle folder, as given.
        found: the problems of each check that ran, one line each, by check name.
        notes: what the checks could not use as shipped (e.g. random weights without ``models/model.pt``).
        seconds: wall time per check that ran.
    """

    bundle: Path
    found: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """Every problem found, in check order."""
        return [line for name in CHECKS for line in self.found.get(name, [])]

    def part_problems(self, part: str) -> list[str]:
        """The problems of one part (``"zoo"`` or ``"medseg"``)."""
        return [line for name in PARTS[part] for line in self.found.get(name, [])]

    def labelled_problems(self) -> list[tuple[str, str]]:
        """``(part, problem)`` for every problem, in check order."""
        return [(part_of(name), line) for name in CHECKS for line in self.found.get(name, [])]

    def summary(self) -> str:
        """One entry per part that ran: ``"zoo: OK; medseg: 2 problem(s)"``."""
        ran = [part for part, names in PARTS.items() if any(n in self.found for n in names)]
        counts = {part: len(self.part_problems(part)) for part in ran}
        return "; ".join(f"{part}: {f'{n} problem(s)' if n else 'OK'}" for part, n in counts.items())

    @property
    def ok(self) -> bool:
        return not self.problems


def _network_spec(files: BundleFiles) -> tuple[InputSpec | None, str]:
    """The metadata's input spec for the network checks, or ``(None, why they cannot run)``."""
    for rel in (METADATA, files.inference_rel):
        if not (files.root / rel).is_file():
            return None, f"no {rel}"
        if not files.valid_json(rel):
            return None, f"{rel} is not valid {'YAML' if rel.endswith(('.yaml', '.yml')) else 'JSON'}"
    inference = files.json(files.inference_rel)
    if not (isinstance(inference, dict) and "network_def" in inference):
        return None, f"{files.inference_rel} has no 'network_def'"
    meta = files.json(METADATA)
    try:
        return input_spec(meta if isinstance(meta, dict) else {}, METADATA), ""
    except ValueError as err:
        return None, f"{METADATA} has no usable network_data_format#inputs#image ({err})"


def _slow_checks(
    files: BundleFiles,
    label: str,
    device: str,
    spec: InputSpec,
    result: CheckResult,
    run_timeout_s: float,
    overrides: Mapping[str, Any] | None,
) -> dict[str, Callable[[], list[str]]]:
    """The network checks, ready to run (imports torch; only called when one is wanted and possible)."""
    from pipelines.bundles import network_checks

    notes = result.notes
    return {
        "net_in_out": lambda: network_checks.check_net_in_out(files, label, device, overrides),
        "export": lambda: network_checks.check_export(files, label, device, spec, notes, overrides=overrides),
        "run": lambda: network_checks.check_run(files, label, device, spec, notes, run_timeout_s, overrides),
    }


def _check_overrides(files: BundleFiles, overrides: Mapping[str, Any] | None) -> None:
    """Refuse overrides the inference config cannot take (an unknown id), before any check runs.

    An inference config that is missing or cannot be parsed is left to the checks to report.
    """
    if not overrides:
        return
    path = files.root / files.inference_rel
    if not path.is_file() or not files.valid_json(files.inference_rel):
        return
    config_parser(files.root, [path], user_overrides=overrides)  # ValueError naming an unknown id


def run_checks(
    path: str | Path,
    *,
    checks: Iterable[str] = CHECKS,
    parts: Iterable[str] | None = None,
    device: str = "cpu",
    run_timeout_s: float = 600.0,
    overrides: Mapping[str, Any] | None = None,
) -> CheckResult:
    """Check a bundle folder against the Model Zoo conventions medseg relies on.

    Args:
        path: the bundle folder; messages name it as given.
        checks: which of :data:`CHECKS` to run (in their fixed order). The slow ones (``net_in_out``,
            ``export``, ``run``) are skipped when a quick check found the metadata or the inference
            config unusable.
        parts: keep only the checks of these parts of :data:`PARTS` (``zoo``, ``medseg``); None keeps all.
        device: torch device for the network checks and the ``monai.bundle run`` subprocess.
        run_timeout_s: time limit of the ``monai.bundle run`` subprocess, in seconds.
        overrides: config id -> value (``--override``), applied to the inference config in every
            check that parses it (``configs``, ``net_in_out``, ``export``, ``run``), as
            :func:`pipelines.bundles.bundle.config_parser` ``user_overrides``.

    Returns:
        A :class:`CheckResult`; its ``problems`` are empty when the bundle conforms.

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: an unknown check or part name; an override of an id the inference config does
            not hold (before any check runs).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: bundle folder does not exist")
    wanted = list(checks)
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        raise ValueError(f"checks {unknown}: expected some of {', '.join(CHECKS)}")
    if parts is not None:
        chosen = list(parts)
        if [p for p in chosen if p not in PARTS] or not chosen:
            raise ValueError(f"parts {chosen}: expected some of {', '.join(PARTS)}")
        wanted = [c for c in wanted if part_of(c) in chosen]
    label = str(path)
    files = BundleFiles(root)
    _check_overrides(files, overrides)
    result = CheckResult(bundle=root)
    runners: dict[str, Callable[[], list[str]]] = {
        "zoo_files": lambda: check_zoo_files(files, label),
        "zoo_metadata": lambda: check_zoo_metadata(files, label, result.notes),
        "layout": lambda: check_layout(files, label),
        "metadata": lambda: check_metadata(files, label),
        "configs": lambda: check_configs(files, label, overrides),
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
                runners.update(_slow_checks(files, label, device, spec, result, run_timeout_s, overrides))
        start = time.perf_counter()
        try:
            found = runners[name]()
        except Exception as err:  # one check failing must not abort the report: it is the finding
            logger.debug("%s: %s check raised", label, name, exc_info=True)
            found = [f"{label}: {name} check could not run: {first_line(err)}"]
        result.seconds[name] = time.perf_counter() - start
        result.found[name] = found
        logger.debug("%s: %s check: %d problem(s) in %.1f s", label, name, len(found), result.seconds[name])
    return result


def check_bundle(
    path: str | Path,
    *,
    checks: Iterable[str] = CHECKS,
    parts: Iterable[str] | None = None,
    device: str = "cpu",
    run_timeout_s: float = 600.0,
    overrides: Mapping[str, Any] | None = None,
) -> list[str]:
    """The problems :func:`run_checks` finds in a bundle; an empty list means the bundle conforms.

    Each problem names the bundle (as given), the file and the key, e.g.
    ``"bundles/x: configs/metadata.json: missing key 'numpy_version'"``.
    """
    return run_checks(
        path, checks=checks, parts=parts, device=device, run_timeout_s=run_timeout_s, overrides=overrides
    ).problems
