"""The predictor: device choice, precision policy and sliding-window inference.

The inferer itself comes from the bundle (MONAI's ``SlidingWindowInferer`` or any inferer with the
same call signature). This module decides where and in which precision it runs, runs it without
autograd bookkeeping, and retries with fewer windows per batch when a GPU runs out of memory.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer

logger = logging.getLogger(__name__)

__all__ = [
    "PRECISIONS",
    "FittedSlidingWindowInferer",
    "InputLayersFP32",
    "Predictor",
    "fitted_roi_size",
    "fold_batch_norm",
    "resolve_device",
    "resolve_precision",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device that exists here.

    Raises:
        ValueError: unknown name, or CUDA asked for where there is none (or not that index).
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine (use cpu or auto)")
        index = 0 if name == "cuda" else name.split(":", 1)[1]
        try:
            index = int(index)
        except ValueError as err:
            raise ValueError(f"device {device!r}: expected cuda:N with an integer N") from err
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device(f"cuda:{index}")
    raise ValueError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")


def _cpu_has_fast_bf16() -> bool:
    # AMX tiles make bf16 convolutions 3-4x faster than fp32 (CT U-Net, 96^3 window: 0.034 s against
    # 0.20 s on a 2-core Xeon with AMX). AVX-512 BF16 alone does not pay: on a 2-core Xeon without AMX
    # the 8 windows of 160^3 of a 512x512x200 CT took 20-22 s in bf16 against 14.3-14.5 s in fp32
    # (scripts/bench/worker.py, 2 runs each), so ``auto`` keeps fp32 there as on CPUs with neither.
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def resolve_precision(precision: str, device: torch.device) -> str:
    """Pick the compute precision: ``auto`` means bf16 where the hardware runs it fast, else fp32.

    On CUDA ``auto`` is bf16 on GPUs that support it, fp16 otherwise (AMP either way). fp16 on a CPU
    is refused: PyTorch's CPU fp16 kernels are slow and add nothing over bf16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return precision
    if precision == "fp16":
        raise ValueError("precision 'fp16' is for CUDA devices; on a CPU use bf16 or fp32")
    if precision == "auto":
        return "bf16" if _cpu_has_fast_bf16() else "fp32"
    return precision


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AMX tiles or AVX-512 BF16); elsewhere PyTorch emulates bf16
    through float32 with conversions."""
    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    )


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


@dataclass
class Predictor:
    """Runs a network through an inferer on one device in one precision.

    Attributes:
        network: the model, already holding its weights.
        inferer: callable ``inferer(inputs, network) -> logits``, e.g. MONAI's SlidingWindowInferer.
        device: where the network and the sliding window run.
        precision: ``fp32``, ``bf16`` or ``fp16`` (already resolved, see :func:`resolve_precision`).
    """

    network: torch.nn.Module
    inferer: Callable[..., torch.Tensor]
    device: torch.device
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.network = self.network.to(self.device).eval()
        if self.precision == "fp32":
            # Not under bf16/fp16: there the folded weights are rounded to 8 significant bits where the
            # separate norm ran in fp32, which doubled the label flips against fp32 on the CT U-Net
            # (tests/test_inference.py, 629 against 294 voxels).
            fold_batch_norm(self.network)
        if self.precision != "fp32":
            self.network = InputLayersFP32(self.network)
        if self.device.type == "cpu" and _has_3d_convolutions(self.network):
            # oneDNN's 3D convolutions run about 1.5-2x faster on channels-last tensors here
            # (UNet 96^3 window, bf16: 0.037 s against 0.055 s); numerics are unchanged.
            self.network = ChannelsLast3d(self.network)

    @property
    def fp32_layers(self) -> list[str]:
        """Names of the layers kept in fp32 under bf16/fp16 (known after the first window)."""
        found = [m for m in self.network.modules() if isinstance(m, InputLayersFP32)]
        return list(found[0].fp32_layers or []) if found else []

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Predict per-class scores for a batch.

        Args:
            image: ``(B, C, H, W, D)`` float tensor, any device.

        Returns:
            ``(B, num_classes, H, W, D)`` float32 scores on ``self.device``.
        """
        inputs = image.to(self.device, non_blocking=True)
        while True:
            try:
                with torch.inference_mode(), autocast(self.device, self.precision):
                    logits = self.inferer(inputs, self.network)
                return logits.float()
            except torch.OutOfMemoryError:
                if not self._fewer_windows():
                    raise
                torch.cuda.empty_cache()

    def _fewer_windows(self) -> bool:
        """Halve the inferer's windows per batch after an out-of-memory error; False when at 1."""
        current = getattr(self.inferer, "sw_batch_size", None)
        if self.device.type != "cuda" or not isinstance(current, int) or current <= 1:
            return False
        self.inferer.sw_batch_size = max(1, current // 2)  # type: ignore[attr-defined]
        logger.warning(
            "out of GPU memory with %d windows per batch; retrying with %d", current, self.inferer.sw_batch_size
        )  # type: ignore[attr-defined]
        return True


def fold_batch_norm(network: torch.nn.Module) -> list[str]:
    """Fold each eval-mode batch norm that directly follows a convolution into that convolution, in place.

    In eval mode a batch norm is a per-channel affine map, so it can be folded into the preceding
    convolution's weights and bias (torch's ``fuse_conv_bn_eval``, transposed convolutions
    included): the same output to float rounding, one pass over the activations fewer. On the CT
    U-Net the batch norms took about 10% of the CPU forward. Handles MONAI's ``Convolution`` blocks
    (``conv`` followed by ``adn.N``), which is how MONAI's U-Net, ``ResidualUnit`` and most of its
    CNNs are built; the norm is replaced by ``Identity``. Instance and group norms depend on the
    input and are left alone. Like :class:`InputLayersFP32` this is for inference only: it changes
    the state-dict keys.

    Returns:
        the names of the folded convolutions.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = []
    for name, block in network.named_modules():
        conv, adn = getattr(block, "conv", None), getattr(block, "adn", None)
        norm = getattr(adn, "N", None) if adn is not None else None
        if not isinstance(conv, torch.nn.modules.conv._ConvNd):
            continue
        if not isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            continue
        if norm.training or conv.training or not norm.track_running_stats or norm.running_mean is None:
            continue
        if next(iter(adn.children())) is not norm:  # another layer (dropout, activation) sits between them
            continue
        transposed = isinstance(conv, torch.nn.modules.conv._ConvTransposeNd)
        block.conv = fuse_conv_bn_eval(conv, norm, transpose=transposed)
        adn.N = torch.nn.Identity()
        folded.append(name)
    return folded


def _has_3d_convolutions(network: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d) for m in network.modules())


class _Float32(torch.nn.Module):
    """Runs one layer outside autocast, in fp32."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        args = tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
        with torch.autocast(device_type=args[0].device.type if args else "cpu", enabled=False):
            return self.layer(*args, **kwargs)


class InputLayersFP32(torch.nn.Module):
    """Mixed precision that leaves the image itself unrounded: layers reading the input run in fp32.

    bf16 keeps 8 significant bits, so casting a [0, 1]-scaled CT window of 425 HU to bf16 rounds
    intensities in its upper half to steps of about 1.7 HU: enough to move the boundary of a
    low-contrast lesion. Running only the layers that read the image in fp32 (for the CT U-Net
    the first strided convolution and its residual branch, ~3% of the FLOPs) costs about 10% of
    the bf16 forward and lifts the agreement of the bf16 label map with the fp32 one from
    0.984-0.996 to >= 0.997 Dice per label (512x512x200 phantom, shipped weights).

    The layers are found on the first forward: every parameterised leaf module whose first
    argument is the network's input tensor. They are swapped for fp32 wrappers in place, which
    renames their state-dict keys; the wrapped network is meant for inference only.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.fp32_layers: list[str] | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.fp32_layers is None:
            self.fp32_layers = self._keep_input_layers_fp32(inputs)
        return self.network(inputs)

    def _keep_input_layers_fp32(self, inputs: torch.Tensor) -> list[str]:
        probe = inputs[:1]
        readers: list[str] = []
        leaves = {
            name: module
            for name, module in self.network.named_modules()
            if name and not list(module.children()) and any(True for _ in module.parameters(recurse=False))
        }

        def record(name: str) -> Callable[..., None]:
            def hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
                first = args[0] if args else None
                reads_image = isinstance(first, torch.Tensor) and first.data_ptr() == probe.data_ptr()
                if reads_image and first.shape == probe.shape and name not in readers:
                    readers.append(name)

            return hook

        handles = [module.register_forward_pre_hook(record(name)) for name, module in leaves.items()]
        try:
            self.network(probe)  # one window, only to see which layers read it
        finally:
            for handle in handles:
                handle.remove()
        for name in readers:
            self.network.set_submodule(name, _Float32(leaves[name]))
        if readers:
            logger.info("mixed precision: layers reading the image run in fp32: %s", ", ".join(readers))
        else:
            logger.info("mixed precision: no layer reads the input directly; every layer runs in low precision")
        return readers


class ChannelsLast3d(torch.nn.Module):
    """Runs a 3D network with its weights and inputs in the channels-last memory layout."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network.to(memory_format=torch.channels_last_3d)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs.contiguous(memory_format=torch.channels_last_3d))


class AutocastInferer(Inferer):
    """Run another inferer (default: the plain forward pass) under autocast.

    MONAI's trainers and evaluators only autocast on CUDA (``amp=True``). This inferer lets a
    bundle's training and validation use bf16 on CPUs with fast bf16 units, where it is several
    times faster than fp32, while the gradients and the optimizer stay in fp32.

    Args:
        precision: ``fp32`` (no autocast), ``bf16`` or ``fp16``.
        inferer: the inferer to wrap, e.g. a ``SlidingWindowInferer`` for validation.
    """

    def __init__(self, precision: str = "bf16", inferer: Inferer | None = None) -> None:
        if precision not in _DTYPES:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(_DTYPES)}")
        self.precision = precision
        self.inferer = inferer or SimpleInferer()

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        with autocast(inputs.device, self.precision):
            out = self.inferer(inputs, network, *args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) else out


def fitted_roi_size(roi_size: Sequence[int], spatial_shape: Sequence[int], divisor: int) -> tuple[int, ...]:
    """The window for one image: ``roi_size`` per axis, but no larger than the image rounded up to ``divisor``.

    Args:
        roi_size: the configured window, voxels per spatial axis.
        spatial_shape: the image's spatial shape, voxels.
        divisor: what every window side must be a multiple of (16 for a U-Net with four stride-2 levels).
    """
    return tuple(
        min(int(r), divisor * math.ceil(int(s) / divisor)) for r, s in zip(roi_size, spatial_shape, strict=True)
    )


class FittedSlidingWindowInferer(SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` whose window shrinks to fit an image smaller than it.

    Large windows with a small overlap compute each voxel fewer times than small windows at overlap
    0.5 (see ``scripts/bench/window_tradeoff.py``), but MONAI pads an image smaller than the window up
    to the full window, so a small scan would pay for the whole large window. Here the window of
    each call is ``roi_size`` clipped per axis to the image's shape rounded up to ``divisor`` (see
    :func:`fitted_roi_size`): small images run in one window of about their own size, large ones
    exactly as ``SlidingWindowInferer(roi_size, ...)``. The choice depends on the image only, never
    on the machine. All other arguments are ``SlidingWindowInferer``'s.

    Args:
        roi_size: the largest window, voxels per spatial axis (each a multiple of ``divisor``).
        divisor: every window side is a multiple of it (the network's total down-sampling factor).
    """

    def __init__(self, roi_size: Sequence[int] | int, *args: Any, divisor: int = 16, **kwargs: Any) -> None:
        super().__init__(roi_size, *args, **kwargs)
        if int(divisor) < 1:
            raise ValueError(f"divisor {divisor!r}: expected a positive integer")
        bad = [int(r) for r in self.roi_size if int(r) <= 0 or int(r) % int(divisor)]
        if bad:
            raise ValueError(f"roi_size {list(self.roi_size)}: every side must be a positive multiple of {divisor}")
        self.divisor = int(divisor)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        roi = fitted_roi_size(self.roi_size, inputs.shape[2:], self.divisor)
        if roi == tuple(int(r) for r in self.roi_size):
            return super().__call__(inputs, network, *args, **kwargs)
        fitted = copy.copy(self)  # a per-call copy: the configured window stays for the next image
        fitted.roi_size = roi
        fitted.roi_weight_map = None
        return SlidingWindowInferer.__call__(fitted, inputs, network, *args, **kwargs)
