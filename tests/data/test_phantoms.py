"""Tests of the phantom factories (pipelines.data.phantoms.make and the anatomy behind them):
determinism, anatomy, geometry and argument checks. The writers are tested in test_phantom_writers.py."""

from __future__ import annotations

import ast
import importlib
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import pipelines.data.phantoms
from pipelines.data.phantoms.make import Phantom, make_brain_tumor_phantom, make_ct_phantom, make_mr_phantom
from pipelines.data.phantoms.tissues import BRAIN_TISSUES, CT_STRUCTURES, TISSUES

# a coarse grid with the default field of view (288 x 240 x 192 mm): fast, same anatomy scale
COARSE = {"shape": (96, 80, 48), "spacing_mm": (3.0, 3.0, 4.0)}


def _voxel_ml(phantom: Phantom) -> float:
    return float(abs(np.linalg.det(phantom.affine[:3, :3]))) / 1000.0


def _world_centroid(phantom: Phantom, label_id: int) -> np.ndarray:
    ijk = np.argwhere(phantom.label == label_id).mean(axis=0)
    return (phantom.affine @ np.append(ijk, 1.0))[:3]


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda seed: make_ct_phantom(seed, **COARSE),
        lambda seed: make_mr_phantom(seed, **COARSE),
        lambda seed: make_brain_tumor_phantom(seed, shape=(48, 48, 16), channels=2),
    ],
    ids=["ct", "mr", "brain"],
)
def test_same_seed_same_arrays_different_seed_different(factory) -> None:
    a, b, c = factory(3), factory(3), factory(4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.label, c.label)


def test_anatomy_is_shared_by_ct_and_mr_and_by_lesion_setting() -> None:
    ct = make_ct_phantom(7, lesions=False, **COARSE)
    mr = make_mr_phantom(7, **COARSE)
    np.testing.assert_array_equal(ct.label, mr.label)
    with_lesions = make_ct_phantom(7, **COARSE)
    liver, tumor = CT_STRUCTURES["liver"], CT_STRUCTURES["liver_tumor"]
    assert (with_lesions.label == tumor).any()
    assert not (ct.label == tumor).any()
    merged = np.where(with_lesions.label == tumor, liver, with_lesions.label)
    np.testing.assert_array_equal(merged, ct.label)


# ---------------------------------------------------------------------------------------------
# CT anatomy
# ---------------------------------------------------------------------------------------------

# (volume range mL, mean HU range) at the default field of view
PLAUSIBLE = {
    "liver": ((950, 2000), (80, 140)),
    "spleen": ((80, 380), (90, 150)),
    "kidney_right": ((80, 260), (110, 200)),
    "kidney_left": ((80, 260), (110, 200)),
    "pancreas": ((30, 130), (70, 130)),
    "gallbladder": ((8, 70), (-15, 35)),
    "aorta": ((35, 150), (130, 260)),
    "inferior_vena_cava": ((30, 140), (90, 170)),
    "stomach": ((100, 450), (-450, 90)),
    "adrenal_gland_right": ((1, 10), (20, 100)),
    "adrenal_gland_left": ((1, 10), (20, 100)),
    "portal_vein": ((5, 40), (110, 210)),
    "esophagus": ((3, 30), (15, 80)),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ct_default_volumes_and_hu_are_plausible(seed: int) -> None:
    start = time.perf_counter()
    ph = make_ct_phantom(seed)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0  # about 1 s on 2 cores; generous against a busy machine
    assert ph.image.shape == ph.label.shape == (192, 160, 96)
    assert ph.image.dtype == np.int16 and ph.label.dtype == np.uint8
    assert ph.modality == "CT"
    assert ph.labels == {0: "background", **{i: n for n, i in CT_STRUCTURES.items()}}
    voxel_ml = _voxel_ml(ph)
    assert voxel_ml == pytest.approx(1.5 * 1.5 * 2.0 / 1000)
    for name, ((v_lo, v_hi), (h_lo, h_hi)) in PLAUSIBLE.items():
        mask = ph.label == CT_STRUCTURES[name]
        volume = mask.sum() * voxel_ml
        assert v_lo <= volume <= v_hi, f"{name}: {volume:.1f} mL"
        mean_hu = float(ph.image[mask].mean())
        assert h_lo <= mean_hu <= h_hi, f"{name}: {mean_hu:.1f} HU"
    # lesions: hypodense against the liver
    tumor = ph.label == CT_STRUCTURES["liver_tumor"]
    assert tumor.any()
    liver = ph.label == CT_STRUCTURES["liver"]
    assert ph.image[liver].mean() - ph.image[tumor].mean() > 15
    # air outside, fat under the skin, bone in the spine
    assert ph.image[0, 0, :].mean() < -900
    fat = ph.tissue == TISSUES["fat"]
    assert -140 < ph.image[fat].mean() < -60
    marrow = ph.tissue == TISSUES["bone_marrow"]
    assert ph.image[marrow].mean() > 150
    lung = ph.tissue == TISSUES["lung"]
    assert lung.any() and ph.image[lung].mean() < -700


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_liver_is_on_patients_right_and_spleen_on_left(orientation: str) -> None:
    ph = make_ct_phantom(11, orientation=orientation, **COARSE)
    liver = _world_centroid(ph, CT_STRUCTURES["liver"])
    spleen = _world_centroid(ph, CT_STRUCTURES["spleen"])
    aorta = _world_centroid(ph, CT_STRUCTURES["aorta"])
    ivc = _world_centroid(ph, CT_STRUCTURES["inferior_vena_cava"])
    kidney_r = _world_centroid(ph, CT_STRUCTURES["kidney_right"])
    kidney_l = _world_centroid(ph, CT_STRUCTURES["kidney_left"])
    # RAS world: +x is the patient's right, +y anterior
    assert liver[0] > 20 and spleen[0] < -20
    assert ivc[0] > aorta[0]
    assert kidney_r[0] > 0 > kidney_l[0]
    assert kidney_r[1] < liver[1]  # kidneys lie posterior
    spine = ph.tissue == TISSUES["bone_marrow"]
    spine_y = (ph.affine @ np.append(np.argwhere(spine).mean(axis=0), 1.0))[1]
    assert spine_y < aorta[1]


@pytest.mark.parametrize("orientation", ["LPS", "LAS", "PIR"])
def test_orientation_changes_layout_not_anatomy(orientation: str) -> None:
    ras = make_ct_phantom(5, **COARSE)
    shape = tuple(COARSE["shape"][("RAS".index(c) if c in "RAS" else "LPI".index(c))] for c in orientation)
    spacing = tuple(COARSE["spacing_mm"][("RAS".index(c) if c in "RAS" else "LPI".index(c))] for c in orientation)
    other = make_ct_phantom(5, shape=shape, spacing_mm=spacing, orientation=orientation)
    assert other.image.shape == shape
    assert "".join(nib.aff2axcodes(other.affine)) == orientation
    for name, label_id in CT_STRUCTURES.items():
        if (ras.label == label_id).any():
            np.testing.assert_allclose(
                _world_centroid(other, label_id),
                _world_centroid(ras, label_id),
                atol=1e-3,
                err_msg=name,
            )
    back = nib.as_closest_canonical(nib.Nifti1Image(other.image, other.affine))
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), ras.image)
    np.testing.assert_allclose(back.affine, ras.affine, atol=1e-6)
    # the volume is centred on the world origin
    centre = other.affine @ np.append((np.array(shape) - 1) / 2, 1.0)
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-6)


def test_label_ids_select_and_renumber_structures() -> None:
    ids = {"liver": 1, "spleen": 2, "kidney_right": 3, "kidney_left": 4, "liver_tumor": 5}
    full = make_ct_phantom(2, **COARSE)
    sub = make_ct_phantom(2, label_ids=ids, **COARSE)
    assert sub.labels == {
        0: "background",
        1: "liver",
        2: "spleen",
        3: "kidney_right",
        4: "kidney_left",
        5: "liver_tumor",
    }
    assert set(np.unique(sub.label)) <= {0, 1, 2, 3, 4, 5}
    np.testing.assert_array_equal(sub.image, full.image)  # unlabelled anatomy is still drawn
    for name, new_id in ids.items():
        np.testing.assert_array_equal(sub.label == new_id, full.label == CT_STRUCTURES[name])
    # without a tumour label, lesions count as liver
    liver_only = make_ct_phantom(2, label_ids={"liver": 7}, **COARSE)
    expected = np.isin(full.label, [CT_STRUCTURES["liver"], CT_STRUCTURES["liver_tumor"]])
    np.testing.assert_array_equal(liver_only.label == 7, expected)
    assert liver_only.labels == {0: "background", 7: "liver"}


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((64, 64, 16), (1.0, 1.0, 3.0)), ((24, 20, 8), (10.0, 10.0, 20.0))],
)
def test_anatomy_fits_any_field_of_view(shape, spacing) -> None:
    ph = make_ct_phantom(0, shape=shape, spacing_mm=spacing)
    present = set(np.unique(ph.label)) - {0}
    assert CT_STRUCTURES["liver"] in present
    # the body stays inside the field of view: the border of every slice is mostly air
    border = np.concatenate([ph.tissue[0].ravel(), ph.tissue[-1].ravel()])
    assert (border == TISSUES["air"]).mean() > 0.5


# ---------------------------------------------------------------------------------------------
# MR and brain
# ---------------------------------------------------------------------------------------------


def test_mr_phantom_has_t1_like_contrast() -> None:
    ph = make_mr_phantom(1, **COARSE)
    assert ph.modality == "MR" and ph.image.dtype == np.int16 and ph.image.min() >= 0
    assert "liver_tumor" not in ph.labels.values()
    tissue = ph.tissue

    def mean(name: str) -> float:
        return float(ph.image[tissue == TISSUES[name]].mean())

    assert mean("fat") > mean("liver") > mean("gallbladder")
    assert mean("liver") > mean("spleen")
    assert mean("air") < 0.2 * mean("muscle")


def test_brain_tumor_is_one_component_inside_the_brain() -> None:
    ph = make_brain_tumor_phantom(0)
    assert ph.image.shape == ph.label.shape == (128, 128, 40)
    assert ph.image.dtype == np.float32 and ph.label.dtype == np.uint8
    assert ph.labels == {0: "background", 1: "tumor"}
    tumor = ph.label == 1
    _, n_components = ndimage.label(tumor)
    assert n_components == 1
    # everything around the tumour is brain (white/grey matter, edema, CSF), never skull or air
    ring = ndimage.binary_dilation(tumor, iterations=2) & ~tumor
    brain = [BRAIN_TISSUES[n] for n in ("white_matter", "grey_matter", "edema", "csf", "ventricle")]
    assert np.isin(ph.tissue[ring], brain).all()
    # enhancing rim is brighter than white matter on the T1c-like image
    rim = ph.tissue == BRAIN_TISSUES["tumor_rim"]
    white = ph.tissue == BRAIN_TISSUES["white_matter"]
    assert ph.image[rim].mean() > ph.image[white].mean()


@pytest.mark.parametrize("channels", [2, 4])
def test_brain_multichannel_shape(channels: int) -> None:
    ph = make_brain_tumor_phantom(
        1, shape=(64, 60, 20), spacing_mm=(2.0, 2.0, 6.0), orientation="LPS", channels=channels
    )
    assert ph.image.shape == (channels, 64, 60, 20)
    assert ph.label.shape == (64, 60, 20)
    assert ph.image.dtype == np.float32
    assert not np.allclose(ph.image[0], ph.image[1])
    # the same anatomy as a single-channel phantom of the same seed
    single = make_brain_tumor_phantom(1, shape=(64, 60, 20), spacing_mm=(2.0, 2.0, 6.0), orientation="LPS")
    np.testing.assert_array_equal(single.label, ph.label)


# ---------------------------------------------------------------------------------------------
# bad arguments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"orientation": "XYZ"}, "orientation"),
        ({"orientation": "RRS"}, "orientation"),
        ({"orientation": "RA"}, "orientation"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, -2.0, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, float("nan"), 1.0)}, "spacing_mm"),
        ({"shape": (7, 64, 64)}, "shape"),
        ({"shape": (64, 64)}, "shape"),
        ({"shape": (64, 64, 8.5)}, "shape"),
        ({"label_ids": {"heart": 1}}, "label_ids"),
        ({"label_ids": {"liver": 1, "spleen": 1}}, "label_ids"),
        ({"label_ids": {"liver": 0}}, "label_ids"),
        ({"label_ids": {"liver": 256}}, "label_ids"),
    ],
)
def test_ct_bad_arguments_raise_value_error_naming_them(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        make_ct_phantom(0, **kwargs)


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (make_mr_phantom, {"orientation": "XYZ"}, "orientation"),
        (make_mr_phantom, {"shape": (8, 8, 4)}, "shape"),
        (make_brain_tumor_phantom, {"spacing_mm": (0.0, 1.0, 1.0)}, "spacing_mm"),
        (make_brain_tumor_phantom, {"channels": 0}, "channels"),
        (make_brain_tumor_phantom, {"channels": 5}, "channels"),
    ],
)
def test_mr_and_brain_bad_arguments(factory, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        factory(0, **kwargs)


def test_bad_seed() -> None:
    with pytest.raises(ValueError, match="seed"):
        make_ct_phantom(-1, **COARSE)
    with pytest.raises(TypeError, match="seed"):
        make_ct_phantom(1.5, **COARSE)  # type: ignore[arg-type]


@pytest.mark.parametrize("module", ["make", "write"])
def test_phantom_module_has_no_import_side_effects(module: str) -> None:
    phantoms = importlib.import_module(f"pipelines.data.phantoms.{module}")
    assert phantoms.logger.name == f"pipelines.data.phantoms.{module}"
    assert not phantoms.logger.handlers


def test_phantoms_package_is_a_docstring_only() -> None:
    """Names come from the module that defines them; the package itself exports nothing."""
    package = pipelines.data.phantoms
    assert package.__doc__ and "make_ct_phantom" in package.__doc__
    tree = ast.parse(Path(package.__file__).read_text(encoding="utf-8"))
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)  # the docstring, nothing else


@pytest.mark.slow
def test_large_ct_phantom_is_fast_enough() -> None:
    start = time.perf_counter()
    ph = make_ct_phantom(0, shape=(512, 512, 200), spacing_mm=(0.8, 0.8, 2.0))
    assert time.perf_counter() - start < 30.0
    liver_ml = (ph.label == CT_STRUCTURES["liver"]).sum() * _voxel_ml(ph)
    assert 950 <= liver_ml <= 2000
