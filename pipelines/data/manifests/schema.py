"""The manifest JSON Schema: one file, ``schema.json`` beside this module, read here.

``data_manifests/schema.json`` in the repository is a link to the same file, so the schema is
written once. This module loads it and turns :mod:`jsonschema`'s errors into messages that name the
JSON location (``training[3].label``), the value seen and what was expected.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema

__all__ = ["MANIFEST_SCHEMA", "SCHEMA_PATH", "manifest_schema", "schema_errors"]

SCHEMA_PATH = Path(__file__).with_name("schema.json")
"""The manifest JSON Schema (draft 2020-12) shipped inside the package."""

MANIFEST_SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
"""JSON Schema (draft 2020-12) of a manifest. Other top-level keys (``numTraining``...) pass."""

_VALIDATOR = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)


def manifest_schema() -> dict[str, Any]:
    """Return a copy of the manifest JSON Schema (the content of :data:`SCHEMA_PATH`)."""
    return copy.deepcopy(MANIFEST_SCHEMA)


def _location(path: Iterable[Any]) -> str:
    """Format a JSON location such as ``training[3].label``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def schema_errors(data: Any) -> list[tuple[tuple[Any, ...], str]]:
    """Every schema violation of a manifest document, in location order.

    Args:
        data: The parsed JSON document.

    Returns:
        ``(location, message)`` pairs: the location as a tuple of keys and list indices
        (``("training", 3, "label")``), the message naming that location, the value seen and
        what was expected (``"missing required key 'image' in training[0]"``).
    """
    found = []
    for error in sorted(_VALIDATOR.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        location = tuple(error.absolute_path)
        where = _location(location)
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else error.message
            inside = f" in {where}" if where else ""
            message = f"missing required key {missing!r}{inside}"
        elif error.validator == "anyOf" and not where:
            message = "missing required key: expected at least one of 'training', 'validation', 'test'"
        elif error.validator == "pattern" and where.endswith("case_id"):
            message = f"{where}: case_id {error.instance!r} must not contain '/' or '\\'"
        else:
            message = f"{where or 'manifest'}: {error.message}"
        found.append((location, message))
    return found
