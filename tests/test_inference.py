"""Device and precision choice, and the mixed-precision policy of the predictor (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNETR, SegResNet, UNet

from pipelines.bundles.bundle import load_bundle, parse_config
from pipelines.bundles.weights import load_weights
from pipelines.data.phantoms.make import make_ct_phantom
from pipelines.inference import (
    ChannelsLast3d,
    InputLayersFP32,
    Predictor,
    fold_batch_norm,
    resolve_device,
    resolve_precision,
)
from tests.helpers import BUNDLES

CPU = torch.device("cpu")


def small_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=2, norm="batch").eval()


def test_resolve_device_and_precision() -> None:
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("cpu") == CPU
    with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("auto", CPU) in ("fp32", "bf16")
    with pytest.raises(ValueError, match="for CUDA devices"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="expected one of auto, fp32, bf16, fp16"):
        resolve_precision("int8", CPU)


def test_layers_reading_the_image_are_found_and_kept_in_fp32() -> None:
    network = small_unet()
    reference = {k: v.clone() for k, v in network.state_dict().items()}
    predictor = Predictor(network, SlidingWindowInferer((32, 32, 32), 2, 0.25), CPU, "bf16")
    assert isinstance(predictor.network, ChannelsLast3d)
    assert predictor.fp32_layers == []  # found on the first window
    image = torch.rand(1, 1, 48, 40, 36)
    out = predictor(image)
    assert out.shape == (1, 3, 48, 40, 36) and out.dtype == torch.float32
    # MONAI's residual unit feeds the image to its first convolution and to its strided residual branch
    assert sorted(predictor.fp32_layers) == ["model.0.conv.unit0.conv", "model.0.residual"]

    # the wrapped first convolution gives, under autocast, exactly the fp32 result of the original
    wrapped = predictor.network.network.network.get_submodule("model.0.conv.unit0.conv")
    original = UNet(3, 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=2, norm="batch")
    original.load_state_dict(reference)
    window = torch.rand(1, 1, 32, 32, 32)
    with torch.inference_mode():
        expected = original.model[0].conv.unit0.conv(window)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = wrapped(window)
            plain = original.model[0].conv.unit0.conv(window)
    assert got.dtype == torch.float32 and plain.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (plain.float() - expected).abs().max() > 1e-3  # what the image would lose in bf16


def shipped_ct_unet() -> torch.nn.Module:
    bundle = load_bundle(BUNDLES / "ct_abdomen_unet")
    network = parse_config(bundle, overrides={"device": "cpu"}).get_parsed_content("network_def")
    load_weights(network, bundle)
    return network.eval()


def test_fp32_input_layers_bring_bf16_close_to_fp32_on_the_shipped_ct_model() -> None:
    # trained weights on a phantom: the network turns small intensity steps (a lesion 40 HU below
    # the liver) into decisions, so rounding the image itself is what moves boundaries
    phantom = make_ct_phantom(3, shape=(192, 160, 96))
    image = torch.from_numpy(np.clip((phantom.image.astype(np.float32) + 175) / 425, 0, 1))[None, None]
    inferer = SlidingWindowInferer((96, 96, 96), 1, 0.25)
    fp32 = Predictor(shipped_ct_unet(), inferer, CPU, "fp32")(image)
    mixed = Predictor(shipped_ct_unet(), inferer, CPU, "bf16")(image)
    network = shipped_ct_unet().to(memory_format=torch.channels_last_3d)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        all_bf16 = inferer(image.contiguous(memory_format=torch.channels_last_3d), network).float()

    labels = fp32.argmax(1)
    flipped_mixed = int((mixed.argmax(1) != labels).sum())
    flipped_all = int((all_bf16.argmax(1) != labels).sum())
    assert flipped_all > 1000, "all-bf16 moves thousands of voxels on this case"
    assert flipped_mixed < 0.25 * flipped_all  # measured with 0.2.0's weights: 294 against 2403
    # the scores move less too (0.2.0's weights: 0.0083 against 0.0184; 0.3.0's: 0.0198 against 0.0256)
    assert (mixed - fp32).abs().mean() < 0.85 * (all_bf16 - fp32).abs().mean()


def test_batch_norm_folding_keeps_the_shipped_ct_model_output() -> None:
    network = shipped_ct_unet()
    norms = sum(isinstance(m, torch.nn.BatchNorm3d) for m in network.modules())
    image = torch.rand(1, 1, 64, 64, 64)
    with torch.inference_mode():
        before = network(image)
        folded = fold_batch_norm(network)
        after = network(image)
    # every batch norm follows a convolution (transposed ones in the decoder included) and is gone
    assert len(folded) == norms > 0 and not any(isinstance(m, torch.nn.BatchNorm3d) for m in network.modules())
    assert any(isinstance(network.get_submodule(n).conv, torch.nn.ConvTranspose3d) for n in folded)
    assert (after - before).abs().max() < 1e-3 * before.abs().max()
    assert torch.equal(after.argmax(1), before.argmax(1))
    # the fp32 predictor folds them; under bf16 the norms stay (folded weights would be rounded)
    assert not any(
        isinstance(m, torch.nn.BatchNorm3d) for m in Predictor(shipped_ct_unet(), None, CPU).network.modules()
    )
    assert any(
        isinstance(m, torch.nn.BatchNorm3d) for m in Predictor(shipped_ct_unet(), None, CPU, "bf16").network.modules()
    )


def test_batch_norm_folding_leaves_what_it_cannot_fold() -> None:
    training = UNet(3, 1, 2, (8, 16), (2,), norm="batch")  # training mode: the norm uses batch statistics
    dropout_first = UNet(3, 1, 2, (8, 16), (2,), norm="batch", dropout=0.1, adn_ordering="DNA").eval()
    instance = UNet(3, 1, 2, (8, 16), (2,), norm="instance").eval()
    assert fold_batch_norm(training) == [] and fold_batch_norm(dropout_first) == [] and fold_batch_norm(instance) == []
    assert sum(isinstance(m, torch.nn.BatchNorm3d) for m in training.modules()) == 2  # untouched


def test_other_networks_and_no_reader() -> None:
    segres = InputLayersFP32(SegResNet(spatial_dims=3, in_channels=2, out_channels=2, init_filters=8).eval())
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        segres(torch.rand(1, 2, 16, 16, 16))
    assert segres.fp32_layers == ["convInit.conv"]

    unetr = InputLayersFP32(
        UNETR(1, 3, (32, 32, 32), feature_size=8, hidden_size=96, mlp_dim=192, num_heads=4, res_block=True).eval()
    )
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        unetr(torch.rand(2, 1, 32, 32, 32))
    # the patch embedding and the full-resolution encoder block (its convolution and 1x1 residual)
    assert unetr.fp32_layers == [
        "vit.patch_embedding.patch_embeddings",
        "encoder1.layer.conv1.conv",
        "encoder1.layer.conv3.conv",
    ]

    class CastsFirst(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x * 2.0)

    wrapped = InputLayersFP32(CastsFirst())
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = wrapped(torch.rand(2, 1, 8, 8, 8))
    assert wrapped.fp32_layers == [] and out.shape == (2, 2, 8, 8, 8)


def test_fp32_precision_leaves_the_network_alone() -> None:
    predictor = Predictor(small_unet(), SlidingWindowInferer((32, 32, 32), 1, 0.25), CPU, "fp32")
    assert not any(isinstance(m, InputLayersFP32) for m in predictor.network.modules())
    predictor(torch.rand(1, 1, 32, 32, 32))
    assert predictor.fp32_layers == []


class _ShapeRecorder(torch.nn.Module):
    """A 1x1x1 convolution that records the spatial shape of every window it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 1)
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[2:]))
        return self.conv(x)


def test_fitted_window_shrinks_to_small_images_and_stays_for_large_ones() -> None:
    from pipelines.inference import FittedSlidingWindowInferer, fitted_roi_size

    assert fitted_roi_size((160, 160, 160), (40, 200, 160), 16) == (48, 160, 160)
    assert fitted_roi_size((96, 96, 96), (97, 96, 1), 16) == (96, 96, 16)
    inferer = FittedSlidingWindowInferer((64, 64, 64), overlap=0.25, divisor=16)
    net = _ShapeRecorder().eval()
    small = torch.rand(1, 1, 20, 33, 64)
    with torch.inference_mode():
        out = inferer(small, net)
    assert net.shapes == [(32, 48, 64)]  # one window, the image rounded up to 16, not padded to 64^3
    assert out.shape == (1, 2, 20, 33, 64)
    # a 1x1x1 network is position-independent: the fitted window gives the plain forward exactly
    torch.testing.assert_close(out, net.conv(small))
    assert tuple(inferer.roi_size) == (64, 64, 64)  # the configured window is unchanged for the next image
    net.shapes.clear()
    large = torch.rand(1, 1, 100, 64, 70)
    with torch.inference_mode():
        expected = SlidingWindowInferer((64, 64, 64), overlap=0.25)(large, net)
        windows = len(net.shapes)
        net.shapes.clear()
        out = inferer(large, net)
    assert set(net.shapes) == {(64, 64, 64)} and len(net.shapes) == windows  # as MONAI's own inferer
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="multiple of 16"):
        FittedSlidingWindowInferer((96, 96, 40))


def test_shipped_ct_bundle_inferer_is_the_fitted_one() -> None:
    from pipelines.inference import FittedSlidingWindowInferer

    parser = parse_config(load_bundle(BUNDLES / "ct_abdomen_unet"), overrides={"device": "cpu"})
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, FittedSlidingWindowInferer) and isinstance(inferer, SlidingWindowInferer)
    assert inferer.divisor == 16


@pytest.mark.slow
def test_shipped_ct_bundle_finds_the_organs_of_a_40_mm_slab(tmp_path) -> None:
    """A short stack (a 20-slice series of 2 mm) is padded to the window by repeating its edge slices,
    not with zeros: zero padding put an air-like block above and below the organs, a picture the
    network never trained on, and it lost the kidneys of such a slab (this test gives kidney Dice 0
    with zero padding). The slab is cut from a synthetic abdomen of the validation seeds, across
    both kidneys, and keeps its place in space."""
    import nibabel as nib

    from pipelines.data.datasets import bundle_label_ids
    from pipelines.data.synthetic import SyntheticPhantomDataset
    from pipelines.segment import Segmenter, SegmentOptions

    bundle = load_bundle(BUNDLES / "ct_abdomen_unet")
    parser = parse_config(bundle, overrides={"device": "cpu"})
    assert parser.get_parsed_content("inferer").padding_mode == "replicate"
    sample = SyntheticPhantomDataset(
        kind="ct",
        num_samples=1,
        seed=10000,
        label_ids=bundle_label_ids(bundle),
        phantom_options={"anatomy": "body", "region": "abdomen"},
    )[0]
    affine = np.asarray(sample["image"].affine, dtype=float)
    image, label = np.asarray(sample["image"][0]), np.asarray(sample["label"][0])
    ids = {name: i for i, name in bundle.labels.items()}
    kidneys = np.flatnonzero(np.isin(label, [ids["kidney_right"], ids["kidney_left"]]).any(axis=(0, 1)))
    depth = round(40.0 / float(np.linalg.norm(affine[:3, 2])))
    start = int(kidneys.mean()) - depth // 2
    affine[:3, 3] += affine[:3, 2] * start
    nib.save(nib.Nifti1Image(image[:, :, start : start + depth].astype(np.float32), affine), tmp_path / "slab.nii.gz")
    truth = label[:, :, start : start + depth]

    result = Segmenter(bundle.root, SegmentOptions(device="cpu", outputs=("labels",))).run(
        tmp_path / "slab.nii.gz", tmp_path / "out", case_id="slab"
    )
    written = nib.load(result.files["labels"])
    np.testing.assert_allclose(written.affine, affine, atol=1e-4)
    pred = np.asarray(written.dataobj)
    crossed = [name for name in ("spleen", "kidney_right", "kidney_left", "liver") if (truth == ids[name]).sum() > 1000]
    assert {"kidney_right", "kidney_left", "liver"} <= set(crossed)
    for name in crossed:
        p, t = pred == ids[name], truth == ids[name]
        dice = 2 * np.logical_and(p, t).sum() / (p.sum() + t.sum())
        assert dice > 0.75, f"{name}: Dice {dice:.3f} on a 40 mm slab"
