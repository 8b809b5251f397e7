"""Config overrides from the command line: ``--override KEY=VALUE``, MONAI's ``--key value`` in one word.

``KEY`` is a MONAI config id (``#`` separates levels: ``inferer#sw_batch_size``,
``preprocessing#transforms#3#pixdim``); ``VALUE`` is parsed as JSON (``4``, ``0.25``, ``[1.5, 1.5, 2]``,
``true``, ``"text"``) and, when it is not valid JSON, kept as the string given (``$@bundle_root + '/x'``,
``cpu``). Overrides are applied to the parser before any reference is resolved, as
``python -m monai.bundle run --key value`` applies its arguments.

medseg refuses an override whose id the config does not hold (a misspelt id would otherwise be
added as a new, unused key and silently change nothing), and ids a run sets itself
(:data:`RESERVED`). This module imports nothing heavy.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["RESERVED", "check_override_ids", "parse_override", "parse_overrides"]

RESERVED: dict[str, str] = {
    "bundle_root": "the bundle folder is set by --bundle",
    "device": "use --device",
}
"""Ids a medseg run sets itself, and what to use instead."""


def parse_override(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(key, value)``: the value parsed as JSON, else kept as a string.

    Raises:
        ValueError: no ``=``, an empty key, a key with spaces or an empty level (``a##b``), or a
            reserved id (:data:`RESERVED`).
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(
            f"override {text!r}: expected KEY=VALUE with a MONAI config id as KEY (e.g. inferer#overlap=0.5)"
        )
    if any(c.isspace() for c in key) or any(part == "" for part in key.split("#")):
        raise ValueError(f"override {text!r}: {key!r} is not a config id (levels separated by '#', no spaces)")
    if key in RESERVED:
        raise ValueError(f"override {text!r}: {key!r} cannot be overridden here; {RESERVED[key]}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def parse_overrides(texts: Iterable[str] | None) -> dict[str, Any]:
    """Several ``KEY=VALUE`` (in order; a later one for the same key wins). See :func:`parse_override`."""
    overrides: dict[str, Any] = {}
    for text in texts or ():
        key, value = parse_override(text)
        overrides[key] = value
    return overrides


def check_override_ids(overrides: Mapping[str, Any], has_id: Any, known_ids: Iterable[str], where: str) -> None:
    """Refuse overrides whose id the config does not hold.

    Args:
        overrides: id -> value.
        has_id: ``has_id(id) -> bool`` (e.g. ``id in parser`` of a MONAI ConfigParser).
        known_ids: top-level ids of the config, for the "did you mean" hint.
        where: the config file(s), for the message.

    Raises:
        ValueError: an unknown id; names it, the config, and close matches.
    """
    known = list(known_ids)
    for key in overrides:
        if has_id(key):
            continue
        top = key.split("#", 1)[0]
        close = difflib.get_close_matches(top, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close and top not in known else ""
        raise ValueError(
            f"override {key!r}: {where} has no such id (an override only replaces what the config holds){hint}"
        )
