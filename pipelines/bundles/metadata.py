"""What a bundle's ``configs/metadata.json`` says: Model Zoo keys, the network's input spec, labels.

The Model Zoo describes the network's input and output in ``network_data_format``::

    "inputs":  {"image": {"num_channels": 1, "spatial_shape": [96, 96, 96], "modality": "CT", ...}}
    "outputs": {"pred":  {"num_channels": 6, "channel_def": {"0": "background", "1": "spleen", ...}}}

A ``spatial_shape`` entry is an int, ``"*"`` (any size) or a small arithmetic expression in ``n``
and ``p`` (``"16*n"``: a multiple of 16; ``"2**p"``: a power of two). :func:`spatial_shape`
evaluates such a spec to one concrete shape, as a test input for the network needs. This module
imports nothing heavy.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INPUT_FIELDS",
    "META_KEYS",
    "OUTPUT_FIELDS",
    "InputSpec",
    "channel_labels",
    "image_spec",
    "input_spec",
    "meta_get",
    "spatial_shape",
]

META_KEYS: tuple[str, ...] = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "name",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
"""Top-level ``metadata.json`` keys of a Model Zoo bundle (``MetaProperties`` plus the Zoo's)."""

INPUT_FIELDS: tuple[str, ...] = (
    "type",
    "format",
    "modality",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "channel_def",
)
"""Keys of ``network_data_format#inputs#image``."""

OUTPUT_FIELDS: tuple[str, ...] = (
    "type",
    "format",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "channel_def",
)
"""Keys of ``network_data_format#outputs#pred``."""


def meta_get(meta: Any, path: Sequence[str]) -> tuple[bool, Any]:
    """``(found, value)`` of the nested key ``path`` in ``meta`` (``found`` is False where a level is missing)."""
    node: Any = meta
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def image_spec(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``network_data_format#inputs#image``, or ``{}`` when the metadata does not have it."""
    found, spec = meta_get(meta, ("network_data_format", "inputs", "image"))
    return spec if found and isinstance(spec, dict) else {}


def channel_labels(meta: Mapping[str, Any], where: str) -> dict[int, str]:
    """Label id -> structure name from ``network_data_format#outputs#pred#channel_def``.

    Args:
        meta: the parsed ``metadata.json``.
        where: the file, for the error message.

    Returns:
        ``{0: "background", 1: "spleen", ...}``; empty when the metadata names no labels.

    Raises:
        ValueError: a ``channel_def`` key that is not an integer.
    """
    found, channel_def = meta_get(meta, ("network_data_format", "outputs", "pred", "channel_def"))
    labels: dict[int, str] = {}
    for key, name in (channel_def if found and isinstance(channel_def, dict) else {}).items():
        try:
            labels[int(key)] = str(name)
        except ValueError as err:
            raise ValueError(f"{where}: channel_def key {key!r} is not an integer label id") from err
    return labels


_OPERATORS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}
_MAX_EXPONENT = 32


def _evaluate(node: ast.AST, names: Mapping[str, int], text: str) -> int:
    """An int from a parsed ``n``/``p`` expression; anything but ints, ``n``, ``p``, + - * // ** is refused."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, names, text)
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left, names, text), _evaluate(node.right, names, text)
        if isinstance(node.op, ast.Pow) and not 0 <= right <= _MAX_EXPONENT:
            raise ValueError(f"spatial_shape entry {text!r}: exponent {right} outside 0..{_MAX_EXPONENT}")
        if isinstance(node.op, ast.FloorDiv) and right == 0:
            raise ValueError(f"spatial_shape entry {text!r}: division by zero")
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError(
        f"spatial_shape entry {text!r}: expected an int, '*' or an expression of ints, n and p with + - * // **"
    )


def spatial_shape(shape: Sequence[int | str], *, n: int = 1, p: int = 1, any_size: int = 1) -> tuple[int, ...]:
    """One concrete spatial shape from a ``network_data_format`` ``spatial_shape`` spec.

    Each entry is an int (taken as is), ``"*"`` (any size: ``any_size``), or an expression in
    ``n`` and ``p`` evaluated with the given values, e.g. ``"16*n"`` -> 16 and ``"2**p"`` -> 2 with
    the defaults ``n = p = 1``, the smallest sizes a spec allows. These are the values MONAI's
    ``verify_net_in_out`` uses with its defaults, so the shape here is the one that check feeds.

    Args:
        shape: the spec, e.g. ``[96, 96, 96]`` or ``["16*n", "16*n", "16*n"]``.
        n, p: the values of ``n`` and ``p`` in expressions.
        any_size: the size for ``"*"``.

    Returns:
        The sizes in voxels, one per spatial axis.

    Raises:
        ValueError: an entry that is neither an int nor an expression of that form, or a size below 1.
    """
    if isinstance(shape, str | bytes) or not isinstance(shape, Sequence):
        raise ValueError(f"spatial_shape {shape!r}: expected a list of sizes")
    names = {"n": int(n), "p": int(p)}
    sizes = []
    for entry in shape:
        if isinstance(entry, bool):
            raise ValueError(f"spatial_shape entry {entry!r}: expected an int or a string")
        if isinstance(entry, int):
            size = entry
        elif isinstance(entry, str) and entry.strip() == "*":
            size = int(any_size)
        elif isinstance(entry, str):
            try:
                tree = ast.parse(entry.strip(), mode="eval")
            except SyntaxError as err:
                raise ValueError(f"spatial_shape entry {entry!r}: not an expression ({err.msg})") from err
            size = _evaluate(tree, names, entry)
        else:
            raise ValueError(f"spatial_shape entry {entry!r}: expected an int or a string")
        if size < 1:
            raise ValueError(f"spatial_shape entry {entry!r}: gives size {size}, expected 1 or more")
        sizes.append(size)
    return tuple(sizes)


@dataclass(frozen=True)
class InputSpec:
    """The network input the metadata describes.

    Attributes:
        channels: ``num_channels``.
        spatial_shape: one concrete patch shape in voxels (see :func:`spatial_shape`, ``n = p = 1``).
        modality: ``"CT"``, ``"MR"``... as written, ``""`` when absent.
    """

    channels: int
    spatial_shape: tuple[int, ...]
    modality: str


def input_spec(meta: Mapping[str, Any], where: str) -> InputSpec:
    """The network input of ``network_data_format#inputs#image``.

    Args:
        meta: the parsed ``metadata.json``.
        where: the file, for error messages.

    Raises:
        ValueError: no input spec, or one without a usable ``num_channels`` / ``spatial_shape``.
    """
    spec = image_spec(meta)
    if not spec:
        raise ValueError(f"{where}: missing key 'network_data_format#inputs#image'")
    channels = spec.get("num_channels")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(
            f"{where}: key 'network_data_format#inputs#image#num_channels': expected an int >= 1, got {channels!r}"
        )
    if "spatial_shape" not in spec:
        raise ValueError(f"{where}: missing key 'network_data_format#inputs#image#spatial_shape'")
    try:
        shape = spatial_shape(spec["spatial_shape"])
    except ValueError as err:
        raise ValueError(f"{where}: key 'network_data_format#inputs#image#spatial_shape': {err}") from err
    return InputSpec(channels=channels, spatial_shape=shape, modality=str(spec.get("modality", "") or ""))
