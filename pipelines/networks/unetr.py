"""UNETR with its patch size and transformer depth as parameters.

MONAI's :class:`monai.networks.nets.UNETR` fixes the vision transformer's patch at 16 voxels and
its depth at 12 layers. At the CT bundle's 1.5 mm grid a 16-voxel token is 24 mm wide, and an
adrenal limb (6-7 mm) is a quarter of one; the decoder's only full-resolution path is its first
convolution block. :class:`PatchUNETR` is the same architecture (Hatamizadeh et al., WACV 2022)
with ``patch_size`` (any power of two from 4 to 32) and ``num_layers`` exposed, built from MONAI's
own parts (:class:`~monai.networks.nets.ViT`, ``UnetrBasicBlock``, ``UnetrPrUpBlock``,
``UnetrUpBlock``, ``UnetOutBlock``) rather than written anew: only the wiring is ours.

The wiring follows the number of resolution levels, ``n = log2(patch_size)``:

- level 0 (full resolution, ``feature_size`` channels): a convolution block on the input;
- level ``k`` for ``k = 1 .. n-1`` (``input / 2**k``, ``feature_size * 2**k`` channels): the
  transformer's hidden state after layer ``k * num_layers // n`` reshaped to the token grid and
  brought up by ``n - k`` transposed convolutions (MONAI's ``UnetrPrUpBlock``);
- the transformer's output (the token grid, ``hidden_size`` channels) is decoded level by level,
  each step up-sampling by 2 and joining that level's skip (``UnetrUpBlock``).

With ``patch_size=16`` and ``num_layers=12`` this is MONAI's ``UNETR``: the same modules, the same
parameter count and the same taps (layers 3, 6 and 9); only the attribute names differ, so its
state dicts do not load into each other. With ``patch_size=8`` there is one level fewer: the
token grid is 8 times finer (12 mm at 1.5 mm), the deepest, widest decoder block
(``feature_size * 8`` channels, most of a small UNETR's parameters) is not there, and attention
runs over 8 times as many tokens (512 for a 64³ input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.nets.vit import ViT
from monai.utils import ensure_tuple_rep
from torch import nn

__all__ = ["PatchUNETR"]

_PATCH_SIZES = (4, 8, 16, 32)


class PatchUNETR(nn.Module):
    """UNETR (vision transformer encoder, convolutional decoder) with a chosen patch size and depth.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        img_size: the input's size; each side a multiple of ``patch_size``. The position
            embeddings fix it: training patches and sliding windows must have this size.
        patch_size: side of a transformer token in voxels: 4, 8, 16 or 32.
        feature_size: channels of the full-resolution level; level ``k`` has ``feature_size * 2**k``.
        hidden_size: the transformer's width; a multiple of ``num_heads``.
        mlp_dim: the transformer's feed-forward width.
        num_layers: transformer layers; at least ``log2(patch_size)`` (one per skip level and one more).
        num_heads: attention heads.
        proj_type: the patch embedding, ``"conv"`` or ``"perceptron"`` (MONAI's ``ViT``).
        norm_name: the decoder's normalisation (MONAI's names, e.g. ``"instance"``).
        res_block: residual convolution blocks in the decoder.
        dropout_rate: the transformer's dropout, in [0, 1].
        spatial_dims: 2 or 3.
        qkv_bias: bias in the attention's query, key and value projections.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: Sequence[int] | int,
        patch_size: int = 16,
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        proj_type: str = "conv",
        norm_name: tuple | str = "instance",
        res_block: bool = True,
        dropout_rate: float = 0.0,
        spatial_dims: int = 3,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        if patch_size not in _PATCH_SIZES:
            raise ValueError(f"patch_size must be one of {_PATCH_SIZES}, got {patch_size}")
        levels = patch_size.bit_length() - 1
        if num_layers < levels:
            raise ValueError(
                f"num_layers must be at least {levels} for patch_size {patch_size} "
                f"(one transformer layer per skip level and one more), got {num_layers}"
            )
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})")
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate}")
        sizes = ensure_tuple_rep(img_size, spatial_dims)
        if any(side % patch_size for side in sizes):
            raise ValueError(f"img_size {tuple(sizes)} must be a multiple of patch_size {patch_size} on every side")

        self.hidden_size = hidden_size
        self.token_grid = [side // patch_size for side in sizes]
        # The hidden state after these layers feeds skip levels 1 .. n-1 (MONAI's UNETR: 3, 6, 9).
        self.taps = [level * num_layers // levels for level in range(1, levels)]
        self.vit = ViT(
            in_channels=in_channels,
            img_size=sizes,
            patch_size=ensure_tuple_rep(patch_size, spatial_dims),
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            proj_type=proj_type,
            classification=False,
            dropout_rate=dropout_rate,
            spatial_dims=spatial_dims,
            qkv_bias=qkv_bias,
        )
        self.stem = UnetrBasicBlock(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=feature_size,
            kernel_size=3,
            stride=1,
            norm_name=norm_name,
            res_block=res_block,
        )
        self.skips = nn.ModuleList(
            UnetrPrUpBlock(
                spatial_dims=spatial_dims,
                in_channels=hidden_size,
                out_channels=feature_size * 2**level,
                num_layer=levels - level - 1,
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                norm_name=norm_name,
                conv_block=True,
                res_block=res_block,
            )
            for level in range(1, levels)
        )
        # Decoders from the deepest level up: the token grid (hidden_size) to level n-1, ..., level 1 to 0.
        widths = [feature_size * 2**level for level in range(levels)] + [hidden_size]
        self.decoders = nn.ModuleList(
            UnetrUpBlock(
                spatial_dims=spatial_dims,
                in_channels=widths[level + 1],
                out_channels=widths[level],
                kernel_size=3,
                upsample_kernel_size=2,
                norm_name=norm_name,
                res_block=res_block,
            )
            for level in reversed(range(levels))
        )
        self.out = UnetOutBlock(spatial_dims=spatial_dims, in_channels=feature_size, out_channels=out_channels)
        self._to_grid = (0, spatial_dims + 1, *range(1, spatial_dims + 1))

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(batch, n, hidden)`` as a channel-first image on the token grid."""
        # concatenation, not [a, *b, c]: TorchScript does not compile starred list items
        shape = [tokens.shape[0]] + self.token_grid + [self.hidden_size]  # noqa: RUF005
        return tokens.reshape(shape).permute(self._to_grid).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, hidden_states = self.vit(x)
        skips = [self.stem(x)]
        for index, block in enumerate(self.skips):
            skips.append(block(self._grid(hidden_states[self.taps[index]])))
        y = self._grid(tokens)
        for index, block in enumerate(self.decoders):
            y = block(y, skips[len(skips) - 1 - index])
        return self.out(y)
