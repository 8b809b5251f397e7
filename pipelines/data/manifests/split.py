"""K-fold cross-validation splits of a manifest's labelled cases."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pipelines.data.manifests.model import load_manifest_document

__all__ = ["split_manifest"]


def split_manifest(
    path: str | os.PathLike[str], *, folds: int, seed: int, allow_outside_paths: bool = False
) -> list[dict[str, Any]]:
    """Make k-fold cross-validation manifests.

    The training and validation entries of the manifest are pooled, ordered by case id, shuffled
    with ``seed`` and cut into ``folds`` parts whose sizes differ by at most one. Manifest ``f``
    has part ``f`` as ``validation`` and the rest as ``training``; ``test`` is kept as is, so
    every labelled case is validated in exactly one fold. Entries are copied unchanged, so their
    relative paths hold when the results are written beside the original manifest.

    Args:
        path: The manifest file.
        folds: Number of folds, at least 2 and at most the number of cases.
        seed: Seed of the shuffle; the same seed gives the same folds.
        allow_outside_paths: Accept paths outside the manifest's folder (see
            :func:`~pipelines.data.manifests.model.resolve_path`).

    Returns:
        ``folds`` manifest dicts, each with a ``"fold"`` entry ``{"index", "count", "seed"}``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ManifestError: if the manifest is structurally invalid (paths outside its folder included).
        ValueError: if ``folds`` is out of range.
    """
    manifest, data = load_manifest_document(path, allow_outside_paths=allow_outside_paths)
    pool: list[tuple[str, Any]] = []
    entry_index = {"training": 0, "validation": 0}
    for case in manifest.cases:
        if case.split in entry_index:
            pool.append((case.case_id, data[case.split][entry_index[case.split]]))
            entry_index[case.split] += 1
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= len(pool):
        raise ValueError(
            f"{manifest.path}: folds must be an integer from 2 to the number of training and "
            f"validation cases ({len(pool)}), got {folds!r}"
        )
    pool.sort(key=lambda item: item[0])
    order = np.random.default_rng(seed).permutation(len(pool))
    parts = [[pool[i][1] for i in sorted(part)] for part in np.array_split(order, folds)]
    result = []
    for index in range(folds):
        fold = {key: value for key, value in data.items() if key not in ("training", "validation")}
        fold["training"] = [entry for other, part in enumerate(parts) if other != index for entry in part]
        fold["validation"] = list(parts[index])
        fold["fold"] = {"index": index, "count": folds, "seed": seed}
        result.append(fold)
    return result
