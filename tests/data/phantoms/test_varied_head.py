"""The ``varied`` classic head (pipelines.data.phantoms.brain): T1-bright scalp fat and diploe, and tumours
that enhance in a ring, solidly or patchily, all of them labelled tumour."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipelines.data.phantoms.brain import TUMOUR_KINDS
from pipelines.data.phantoms.make import make_brain_tumor_phantom
from pipelines.data.phantoms.tissues import BRAIN_TUMOUR_TISSUES, VARIED_BRAIN_TISSUES

T = VARIED_BRAIN_TISSUES
GRID = {"shape": (80, 98, 36), "spacing_mm": (2.0, 2.0, 4.0)}  # 160 x 196 x 144 mm


def _kind(tissue: np.ndarray) -> str:
    if (tissue == T["tumor_rim"]).any():
        return "ring"
    return "patchy" if (tissue == T["tumor_core"]).any() else "solid"


def test_every_kind_of_tumour_is_drawn_and_labelled_whole() -> None:
    kinds = set()
    for seed in range(10):
        p = make_brain_tumor_phantom(seed, varied=True, **GRID)
        tumour = np.isin(p.tissue, [T[n] for n in BRAIN_TUMOUR_TISSUES])
        assert tumour.any(), seed
        np.testing.assert_array_equal(p.label == 1, tumour)
        kinds.add(_kind(p.tissue))
        if _kind(p.tissue) != "ring":  # a solid tumour is mottled: two levels of enhancement
            assert (p.tissue == T["tumor_solid"]).any() and (p.tissue == T["tumor_mottled"]).any(), seed
    assert kinds == set(TUMOUR_KINDS)


@pytest.mark.parametrize("seed", [0, 3])
def test_scalp_fat_and_diploe_are_the_brightest_on_t1c_and_lie_outside_the_brain(seed: int) -> None:
    p = make_brain_tumor_phantom(seed, varied=True, **GRID)
    fat, diploe, tumour = p.tissue == T["scalp_fat"], p.tissue == T["diploe"], p.label == 1
    white = p.tissue == T["white_matter"]
    assert fat.sum() > 0.2 * (p.tissue == T["scalp"]).sum() and diploe.any()
    assert np.median(p.image[fat]) > np.median(p.image[tumour]) > np.median(p.image[white])
    # fat over the skull, never on the brain; the diploe inside the skull (its tables round it)
    brain = np.isin(p.tissue, [T[n] for n in ("grey_matter", "white_matter", "edema")])
    assert not (ndimage.binary_dilation(fat) & brain).any()
    around = p.tissue[ndimage.binary_dilation(diploe) & ~diploe]
    assert (around == T["skull"]).mean() > 0.4


def test_the_head_outline_and_the_default_phantom_are_unchanged() -> None:
    """``varied`` draws from a stream of its own: the head is the same size and place, and the default
    phantom is what it was (pinned bit for bit in test_defaults_pinned)."""
    plain = make_brain_tumor_phantom(2, **GRID)
    varied = make_brain_tumor_phantom(2, varied=True, **GRID)
    np.testing.assert_array_equal(plain.tissue == T["air"], varied.tissue == T["air"])
    assert not np.isin(plain.tissue, [T[n] for n in ("scalp_fat", "diploe", "tumor_solid", "tumor_mottled")]).any()
    np.testing.assert_array_equal(make_brain_tumor_phantom(2, varied=True, **GRID).image, varied.image)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"varied": "yes"}, "varied: expected true or false"), ({"varied": True, "anatomy": "body"}, "classic head")],
)
def test_bad_varied_options_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_brain_tumor_phantom(0, shape=(16, 16, 16), **kwargs)
