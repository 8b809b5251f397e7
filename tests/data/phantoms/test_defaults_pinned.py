"""The default (``anatomy="classic"``) phantoms are pinned bit for bit: shipped weights, the demo, QC
calibration and many tests depend on them. The digests were computed before the ``anatomy="body"`` option
was added; a change here means the default phantoms changed. The ``anatomy="body"`` digests pin that anatomy
as the shipped CT weights' second stage saw it (without ``perirenal_fat``, its default)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pipelines.data.phantoms.make import make_brain_tumor_phantom, make_ct_phantom, make_mr_phantom

PINNED = {
    "ct": (
        lambda: make_ct_phantom(3, shape=(64, 56, 40)),
        "8e7b83c0e36739c9c9cb78d35a76caf4e29a5322b115774a8c21ac0f0a4a9de5",
    ),
    "ct_lps": (
        lambda: make_ct_phantom(5, shape=(48, 40, 32), spacing_mm=(3.0, 3.5, 5.0), orientation="LPS"),
        "cd19ee7027ea790dff7e52cebd527573f4a390c6ca793e9b435b87c9ef545e75",
    ),
    "mr": (
        lambda: make_mr_phantom(3, shape=(64, 56, 24), lesions=True),
        "30cb89b4b73b06a0d8afc80168302d8eea4e3986c3f36f6319fa658b473ace0c",
    ),
    # the body anatomy without perirenal fat: what the CT U-Net's stage 2 (0.3.0) was trained on
    "ct_body": (
        lambda: make_ct_phantom(
            7, anatomy="body", region="abdomen", shape=(64, 52, 48), spacing_mm=(6.0, 6.0, 6.0), perirenal_fat=False
        ),
        "3e6543e9a7c51aa66c8f77fdb9ad98d9898925c9ce4a804d48f36b9b702b813d",
    ),
    "mr_body": (
        lambda: make_mr_phantom(8, anatomy="body", shape=(64, 52, 48), spacing_mm=(6.0, 6.0, 6.0)),
        "46ba5712147e9eddec6ed4a82897a3760bc669f7b07ee59750b7ef2f30b3f597",
    ),
    "brain": (
        lambda: make_brain_tumor_phantom(3, shape=(48, 48, 20), channels=4),
        "4abb7ae0c09883667a1003e3191796e8af8a5561c2e8edff582c93dc157cacff",
    ),
}


def _digest(phantom) -> str:
    h = hashlib.sha256()
    for array in (phantom.image, phantom.label, phantom.tissue, phantom.affine):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_default_phantoms_are_bit_for_bit_unchanged(name: str) -> None:
    factory, digest = PINNED[name]
    assert _digest(factory()) == digest


def test_explicit_classic_is_the_default() -> None:
    a = make_ct_phantom(3, shape=(32, 32, 16))
    b = make_ct_phantom(3, shape=(32, 32, 16), anatomy="classic")
    assert _digest(a) == _digest(b)
