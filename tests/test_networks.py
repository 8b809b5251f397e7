"""PatchUNETR: MONAI's UNETR wiring at patch 16, a finer token grid at patch 8, and clear refusals."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNETR

from pipelines.networks import PatchUNETR

SMALL = {"feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 2}

# MONAI's UNETR attribute -> PatchUNETR's, at patch 16 (four levels)
_RENAMES = {
    "encoder1.": "stem.",
    "encoder2.": "skips.0.",
    "encoder3.": "skips.1.",
    "encoder4.": "skips.2.",
    "decoder5.": "decoders.0.",
    "decoder4.": "decoders.1.",
    "decoder3.": "decoders.2.",
    "decoder2.": "decoders.3.",
}


def _renamed(key: str) -> str:
    for old, new in _RENAMES.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def test_patch_16_with_12_layers_is_monai_unetr_module_for_module() -> None:
    torch.manual_seed(0)
    monai_net = UNETR(in_channels=1, out_channels=3, img_size=32, **SMALL).eval()
    ours = PatchUNETR(in_channels=1, out_channels=3, img_size=32, patch_size=16, num_layers=12, **SMALL).eval()
    state = {_renamed(k): v for k, v in monai_net.state_dict().items()}
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state)
    assert ours.taps == [3, 6, 9]
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), monai_net(x))


def test_patch_8_has_a_finer_token_grid_and_one_level_fewer() -> None:
    net = PatchUNETR(in_channels=1, out_channels=5, img_size=(32, 32, 16), patch_size=8, num_layers=6, **SMALL)
    assert net.token_grid == [4, 4, 2]
    assert net.taps == [2, 4]  # levels 1 and 2 of three
    assert len(net.skips) == 2 and len(net.decoders) == 3
    x = torch.rand(1, 1, 32, 32, 16)
    y = net(x)
    assert y.shape == (1, 5, 32, 32, 16)
    y.square().mean().backward()
    # every block is on the path from input to output (MONAI's transformer blocks hold a
    # cross-attention norm that a plain ViT never uses)
    unused = [name for name, p in net.named_parameters() if p.grad is None and "cross_attn" not in name]
    assert unused == []


def test_patch_8_is_smaller_than_patch_16_at_the_same_widths() -> None:
    def count(net: torch.nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    p16 = PatchUNETR(1, 14, 64, patch_size=16, num_layers=8, feature_size=16, hidden_size=96, mlp_dim=384, num_heads=4)
    p8 = PatchUNETR(1, 14, 64, patch_size=8, num_layers=8, feature_size=16, hidden_size=96, mlp_dim=384, num_heads=4)
    # the deepest decoder block (feature_size * 8 channels) is gone; more position embeddings (512 tokens)
    assert count(p8) < count(p16)
    assert p8.vit.patch_embedding.position_embeddings.shape[1] == 512


def test_scripted_network_gives_the_eager_output() -> None:
    """medseg bundle check exports the network to TorchScript (the Zoo's check)."""
    torch.manual_seed(0)
    net = PatchUNETR(1, 3, 16, patch_size=8, num_layers=3, **SMALL).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_two_dimensional_input() -> None:
    net = PatchUNETR(1, 2, (32, 16), patch_size=4, num_layers=2, spatial_dims=2, **SMALL)
    assert net(torch.rand(1, 1, 32, 16)).shape == (1, 2, 32, 16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch_size": 12}, "patch_size must be one of (4, 8, 16, 32), got 12"),
        ({"img_size": (32, 32, 20)}, "img_size (32, 32, 20) must be a multiple of patch_size 8 on every side"),
        ({"num_layers": 2}, "num_layers must be at least 3 for patch_size 8"),
        ({"num_heads": 3}, "hidden_size (32) must be a multiple of num_heads (3)"),
        ({"dropout_rate": 1.5}, "dropout_rate must be in [0, 1], got 1.5"),
    ],
)
def test_impossible_sizes_are_refused_with_what_was_expected(kwargs: dict, message: str) -> None:
    arguments = {"in_channels": 1, "out_channels": 2, "img_size": 32, "patch_size": 8, "num_layers": 6, **SMALL}
    arguments.update(kwargs)
    with pytest.raises(ValueError) as error:
        PatchUNETR(**arguments)
    assert message in str(error.value)
