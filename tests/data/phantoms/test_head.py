"""Tests of the ``anatomy="body"`` head (pipelines.data.phantoms.head): literature sizes, nested tumour
compartments, tumours in both hemispheres, real size cut by a small field of view."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipelines.data.phantoms.anatomy_facts import FACTS
from pipelines.data.phantoms.make import make_brain_tumor_phantom
from pipelines.data.phantoms.tissues import HEAD_TISSUES

GRID = {"shape": (100, 120, 56), "spacing_mm": (2.0, 2.0, 3.0)}  # 200 x 240 x 168 mm
T = HEAD_TISSUES


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_core_inside_rim_inside_oedema_and_label_is_rim_plus_core(seed: int) -> None:
    p = make_brain_tumor_phantom(seed, anatomy="body", **GRID)
    core, rim, edema = (p.tissue == T[n] for n in ("tumor_core", "tumor_rim", "edema"))
    assert rim.sum() > 0 and edema.sum() > rim.sum() * 0.5
    np.testing.assert_array_equal(p.label == 1, core | rim)
    if core.any():  # the necrotic core touches only the rim
        assert not (ndimage.binary_dilation(core) & ~(core | rim)).any()
    shell = ndimage.binary_dilation(core | rim) & ~(core | rim)
    neighbours = p.tissue[shell]
    assert np.isin(neighbours, [T["edema"], T["ventricle"], T["csf"]]).all()
    assert (neighbours == T["edema"]).mean() > 0.6  # oedema surrounds the enhancing rim


def test_tumours_reach_both_hemispheres_and_vary_in_size() -> None:
    sides, volumes = set(), []
    for seed in range(8):
        p = make_brain_tumor_phantom(seed, anatomy="body", shape=(50, 60, 28), spacing_mm=(4.0, 4.0, 6.0))
        ijk = np.argwhere(p.label == 1)
        sides.add(int(np.sign((p.affine @ np.append(ijk.mean(axis=0), 1.0))[0])))
        volumes.append(len(ijk) * 96 / 1000)
    assert sides == {-1, 1}
    assert max(volumes) > 2 * min(volumes), volumes


def test_brain_and_ventricle_volumes_are_in_the_literature_ranges() -> None:
    p = make_brain_tumor_phantom(5, anatomy="body", **GRID)
    voxel_ml = 2 * 2 * 3 / 1000
    brain = np.isin(p.tissue, [T[n] for n in ("grey_matter", "white_matter", "deep_grey_matter", "edema")])
    brain_ml = (brain.sum() + (p.label == 1).sum()) * voxel_ml
    fact = FACTS["brain_volume"]
    assert fact.low <= brain_ml <= fact.high, brain_ml
    ventricles_ml = (p.tissue == T["ventricle"]).sum() * voxel_ml
    assert FACTS["lateral_ventricles_volume"].low * 0.7 <= ventricles_ml <= FACTS["lateral_ventricles_volume"].high
    assert (p.tissue == T["deep_grey_matter"]).any()
    assert p.tissue_names == {i: n for n, i in HEAD_TISSUES.items()}


def test_head_keeps_its_size_and_is_cut_by_a_small_field_of_view() -> None:
    small = make_brain_tumor_phantom(1, anatomy="body", shape=(64, 64, 20), spacing_mm=(2.0, 2.0, 6.0))
    assert (small.tissue[:, 0] != T["air"]).any() and (small.tissue[:, -1] != T["air"]).any()  # 128 mm < head
    classic = make_brain_tumor_phantom(1, shape=(64, 64, 20), spacing_mm=(2.0, 2.0, 6.0))
    assert (classic.tissue[:, 0] == T["air"]).all()  # the classic head shrinks to fit


def test_unknown_anatomy_is_refused() -> None:
    with pytest.raises(ValueError, match="anatomy"):
        make_brain_tumor_phantom(0, shape=(16, 16, 16), anatomy="real")
