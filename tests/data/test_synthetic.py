"""SyntheticPhantomDataset: samples synthesised on the fly, seeded, with the phantom's labels and affine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, Orientationd, ScaleIntensityRanged, Spacingd

from pipelines.data.appearance import CT_HU_BY_PHASE
from pipelines.data.phantoms.make import make_brain_tumor_phantom, make_ct_phantom
from pipelines.data.synthetic import SyntheticPhantomDataset

CT_GRID = {"shape": (40, 32, 20), "spacing_mm": (7.0, 7.0, 9.0)}
BRAIN_GRID = {"shape": (32, 32, 12), "spacing_mm": (6.0, 6.0, 13.0)}
LABELS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 6}
NO_ARTEFACTS = {
    "texture_std_hu": 0.0, "partial_volume_sigma_mm": [0.0, 0.0], "blur_prob": 0.0, "slice_thickness_prob": 0.0,
    "streak_prob": 0.0, "ring_prob": 0.0, "metal_prob": 0.0, "noise_prob": 0.0,
}  # fmt: skip


def _ct(**kwargs) -> SyntheticPhantomDataset:
    return SyntheticPhantomDataset("ct", num_samples=3, seed=5, label_ids=LABELS, **CT_GRID, **kwargs)


def test_ct_sample_keys_shapes_labels_and_affine_match_the_phantom() -> None:
    sample = _ct()[1]
    phantom = make_ct_phantom(6, label_ids=LABELS, **CT_GRID)
    assert {"image", "label", "case_id", "seed", "phase"} <= set(sample) and "tissue" not in sample
    assert sample["seed"] == 6 and sample["phase"] in CT_HU_BY_PHASE
    image, label = sample["image"], sample["label"]
    assert isinstance(image, MetaTensor) and image.shape == (1, *CT_GRID["shape"]) and image.dtype == torch.float32
    assert label.dtype == torch.uint8 and label.shape == (1, *CT_GRID["shape"])
    np.testing.assert_array_equal(label.numpy()[0], phantom.label)
    np.testing.assert_array_equal(image.affine.numpy(), phantom.affine)
    np.testing.assert_array_equal(label.affine.numpy(), phantom.affine)
    assert float(image.min()) >= -1024 and float(image.max()) <= 3071


def test_ct_is_in_hu_of_the_drawn_phase_before_artefacts() -> None:
    sample = _ct(appearance=NO_ARTEFACTS, keep_tissue=True)[0]
    tissue, image = sample["tissue"].numpy()[0], sample["image"].numpy()[0]
    table = CT_HU_BY_PHASE[sample["phase"]]
    names = make_ct_phantom(5, **CT_GRID).tissue_names
    for tissue_id in np.unique(tissue):
        values = np.unique(image[tissue == tissue_id])
        low, high = table[names[int(tissue_id)]]
        assert values.size == 1 and low - 1e-3 <= values[0] <= high + 1e-3, names[int(tissue_id)]


def test_ct_calibration_offset_moves_every_tissue_together_and_is_off_by_default() -> None:
    plain = _ct(appearance=NO_ARTEFACTS)
    default_off = _ct(appearance={**NO_ARTEFACTS, "offset_hu": [-40.0, -30.0]})  # offset_prob 0: no offset
    shifted = _ct(appearance={**NO_ARTEFACTS, "offset_prob": 1.0, "offset_hu": [-40.0, -30.0]})
    offsets = []
    for index in range(3):
        before, after = plain[index], shifted[index]
        np.testing.assert_array_equal(default_off[index]["image"].numpy(), before["image"].numpy())
        np.testing.assert_array_equal(after["label"].numpy(), before["label"].numpy())
        assert after["phase"] == before["phase"]  # the draws before the offset are untouched
        image, moved = before["image"].numpy(), after["image"].numpy()
        inside = image > -1024 + 40  # air is clipped at -1024 HU and cannot move down
        difference = moved[inside] - image[inside]
        offset = float(np.median(difference))
        np.testing.assert_allclose(difference, offset, atol=1e-3)  # one offset for the whole image (float32)
        assert -40.0 <= offset <= -30.0
        np.testing.assert_allclose(moved[~inside], np.maximum(image[~inside] + offset, -1024), atol=1e-3)
        offsets.append(offset)
    assert len(set(offsets)) == 3  # drawn per sample


def test_reproducible_and_different_per_index_and_epoch() -> None:
    a, b = _ct(), _ct()
    np.testing.assert_array_equal(a[2]["image"].numpy(), b[2]["image"].numpy())
    assert not np.array_equal(a[1]["image"].numpy(), a[2]["image"].numpy())
    first = a[0]
    a.set_epoch(1)
    again = a[0]
    assert not np.array_equal(first["image"].numpy(), again["image"].numpy())  # a new look
    np.testing.assert_array_equal(first["label"].numpy(), again["label"].numpy())  # the same body
    redraw = _ct(redraw_anatomy=True)
    redraw.set_epoch(1)
    assert redraw[0]["seed"] == 5 + 3 and not np.array_equal(redraw[0]["label"].numpy(), first["label"].numpy())


def test_brain_mr_random_contrast_per_channel() -> None:
    dataset = SyntheticPhantomDataset("brain", num_samples=2, seed=2, channels=2, **BRAIN_GRID)
    sample = dataset[0]
    phantom = make_brain_tumor_phantom(2, **BRAIN_GRID)
    assert sample["image"].shape == (2, *BRAIN_GRID["shape"]) and sample["image"].dtype == torch.float32
    assert float(sample["image"].min()) >= 0 and sample["phase"] == "random"
    np.testing.assert_array_equal(sample["label"].numpy()[0], phantom.label)
    np.testing.assert_array_equal(dataset[0]["image"].numpy(), sample["image"].numpy())
    tumour = phantom.label > 0
    channel_means = sample["image"].numpy()[:, tumour].mean(axis=1)
    assert abs(channel_means[0] - channel_means[1]) > 1e-3


def test_mr_orderings_by_name() -> None:
    orderings = {"orderings": [["fat", "liver"]], **{k: 0.0 for k in ("bias_prob", "gamma_prob", "noise_prob")}}
    settings = {**orderings, "texture_std": 0.0, "partial_volume_sigma_mm": [0, 0], "slice_thickness_prob": 0.0}
    dataset = SyntheticPhantomDataset("mr", num_samples=4, seed=1, keep_tissue=True, appearance=settings, **CT_GRID)
    names = {n: i for i, n in make_ct_phantom(1, **CT_GRID).tissue_names.items()}
    for index in range(4):
        sample = dataset[index]
        tissue, image = sample["tissue"].numpy()[0], sample["image"].numpy()[0]
        assert image[tissue == names["fat"]].max() <= image[tissue == names["liver"]].min() + 1e-6
    with pytest.raises(ValueError, match="lacks"):
        SyntheticPhantomDataset("mr", num_samples=1, appearance={"orderings": [["fat", "nope"]]}, **CT_GRID)[0]


def test_transform_and_bundle_style_preprocessing_apply() -> None:
    transform = Compose(
        [
            Orientationd(["image", "label"], axcodes="RAS"),
            Spacingd(["image", "label"], pixdim=(10.0, 10.0, 12.0), mode=["bilinear", "nearest"]),
            ScaleIntensityRanged("image", a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True),
        ]
    )
    sample = _ct(orientation="LPS", transform=transform)[0]
    assert float(sample["image"].min()) >= 0.0 and float(sample["image"].max()) <= 1.0
    assert sample["image"].shape[1:] == sample["label"].shape[1:]
    assert set(np.unique(sample["label"].numpy())) <= {0, *LABELS.values()}


def test_built_from_a_bundle_config_with_target() -> None:
    config = {
        "dataset": {
            "_target_": "pipelines.data.synthetic.SyntheticPhantomDataset",
            "kind": "ct", "num_samples": 2, "seed": 0, "shape": [40, 32, 20], "spacing_mm": [7.0, 7.0, 9.0],
            "label_ids": LABELS, "appearance": {"phases": ["arterial"], "metal_prob": 1.0},
        }
    }  # fmt: skip
    dataset = ConfigParser(config).get_parsed_content("dataset")
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample["phase"] == "arterial" and float(sample["image"].max()) > 2000  # metal inserted


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "pet"}, "kind 'pet'"),
        ({"num_samples": 0}, "num_samples"),
        ({"seed": 50_000}, "test range"),
        ({"seed": 89_999, "num_samples": 2}, None),
        ({"appearance": {"bias_prob": 0.5}}, "unknown for CT"),
        ({"label_ids": {"brain": 1}}, "unknown structure"),
        ({"spacing_mm": [1, 1, 1], "shape": None}, "needs a fixed shape"),
    ],
)
def test_bad_arguments_are_refused_before_any_sample(kwargs: dict, message: str | None) -> None:
    args = {"kind": "ct", "num_samples": 2, **CT_GRID, **kwargs}
    if message is None:  # 89_999 is allowed; its second sample would be a demo seed
        dataset = SyntheticPhantomDataset(**args)
        with pytest.raises(ValueError, match="demo range"):
            dataset[1]
        return
    with pytest.raises(ValueError, match=message):
        SyntheticPhantomDataset(**args)
    with pytest.raises(IndexError):
        SyntheticPhantomDataset("ct", num_samples=1, **CT_GRID).synthesise(1)


def test_phantom_options_reach_the_factory_and_reserved_ones_are_refused() -> None:
    assert _ct(phantom_options={"blur_sigma_mm": 0.0})[0]["seed"] == 5
    with pytest.raises(ValueError, match=r"phantom_options \['lesions', 'shape'\]"):
        _ct(phantom_options={"shape": [8, 8, 8], "lesions": True})
    with pytest.raises(TypeError, match="no_such_option"):  # passed through to make_ct_phantom
        _ct(phantom_options={"no_such_option": 1})


def test_cached_anatomy_is_drawn_once_and_gives_the_same_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """With cache_anatomy each phantom is made once; every epoch's samples equal the uncached ones."""
    import pipelines.data.synthetic as synthetic

    made: list[int] = []
    factory = synthetic.make_ct_phantom

    def counting(seed: int, **kwargs):
        made.append(seed)
        return factory(seed, **kwargs)

    monkeypatch.setattr(synthetic, "make_ct_phantom", counting)
    cached, plain = _ct(cache_anatomy=True), _ct()
    for epoch in (0, 1, 2):
        cached.set_epoch(epoch)
        plain.set_epoch(epoch)
        for index in range(3):
            a, b = cached[index], plain[index]
            np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
            np.testing.assert_array_equal(a["label"].numpy(), b["label"].numpy())
    assert made.count(6) == 1 + 3  # the cached dataset once, the plain one in each of 3 epochs
    assert made.count(5) == 1 + 1 + 3  # seed 5 is also drawn by each constructor's check
    with pytest.raises(ValueError, match="cache_anatomy with redraw_anatomy"):
        _ct(cache_anatomy=True, redraw_anatomy=True)
