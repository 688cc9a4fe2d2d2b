"""Device choice and autocast: a recipe that asks for bf16 never runs emulated bfloat16."""

from __future__ import annotations

import pytest
import torch

from anomalens import device as device_module
from anomalens.device import autocast, native_bf16, resolve_device
from anomalens.errors import ConfigError


def _autocast_dtype_inside(dev: str, bf16: bool) -> torch.dtype:
    with autocast(dev, bf16):
        return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype


def test_bf16_is_used_only_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    device_module._cpu_has_bf16.cache_clear()
    assert not native_bf16("cpu")
    assert _autocast_dtype_inside("cpu", bf16=True) == torch.float32  # emulated bf16: float32 instead

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    device_module._cpu_has_bf16.cache_clear()
    assert native_bf16("cpu")
    assert _autocast_dtype_inside("cpu", bf16=True) == torch.bfloat16
    assert _autocast_dtype_inside("cpu", bf16=False) == torch.float32
    device_module._cpu_has_bf16.cache_clear()  # the real CPU's answer for the tests that follow


def test_gpus_count_as_native_bf16():
    assert native_bf16("cuda") and native_bf16(torch.device("mps"))


def test_absent_or_unknown_devices_are_named_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_the_emulation_warning_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(device_module, "native_bf16", lambda device: False)
    device_module._warn_emulated_bf16.cache_clear()
    with caplog.at_level("WARNING", logger="anomalens.device"):
        for _ in range(3):
            _autocast_dtype_inside("cpu", bf16=True)
    assert sum("no native bfloat16" in r.message for r in caplog.records) == 1
