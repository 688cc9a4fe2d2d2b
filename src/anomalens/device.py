"""Where tensors live: one device chosen per command (``--device auto|cpu|cuda|mps``), and the
autocast and memory format that suit it.

Everything that trains or explains creates its tensors on the model's device (``device_of``)
instead of calling ``.cuda()``, so the same code runs the paper's recipe on a GPU and the CPU
recipe on a laptop.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch
from torch import nn

from anomalens.errors import ConfigError

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then CPU. Asking for a device that is absent is an error, not a fallback."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ConfigError(f"device {name!r} is unknown. Fix: use one of {', '.join(DEVICES)} (or cuda:N)")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but no CUDA GPU is visible. Fix: use --device cpu or auto")
    if name == "mps" and not has_mps:
        raise ConfigError("device 'mps' was asked for but Apple's MPS backend is not available. Fix: use --device cpu")
    return torch.device(name)


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module without any)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bfloat16 natively. CPUs need AVX512-BF16 or AMX: without them
    oneDNN emulates bf16, measured 12x slower than float32 on an AVX2 EPYC (benchmarks/RESULTS.md)."""
    return torch.device(device).type != "cpu" or _cpu_has_bf16()


@functools.cache
def _cpu_has_bf16() -> bool:
    """Asked once per process: ``autocast`` is entered on every training step."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


@functools.cache
def _warn_emulated_bf16() -> None:
    log.warning("bf16 was asked for, but this CPU has no native bfloat16 (AVX512-BF16 or AMX): running in "
                "float32, which is several times faster here")


def autocast(device: torch.device | str, bf16: bool):
    """bfloat16 autocast on ``device`` when ``bf16`` and the device computes bf16 natively (about 2x
    faster convolutions on CPUs with AVX512-BF16 and on recent GPUs); a no-op context otherwise, so
    a recipe that asks for bf16 never runs slower than float32."""
    device = torch.device(device)
    if not bf16:
        return contextlib.nullcontext()
    if not native_bf16(device):
        _warn_emulated_bf16()
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def memory_format(channels_last: bool) -> torch.memory_format:
    """channels_last helps convolutions on CPUs and tensor-core GPUs; the default layout otherwise."""
    return torch.channels_last if channels_last else torch.contiguous_format


def prepare_cpu() -> None:
    """Flush denormal floats to zero: on CPUs they slow convolutions down several-fold (measured 3x)."""
    torch.set_flush_denormal(True)
