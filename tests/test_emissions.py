"""Energy / CO2 accounting and the trade-off score T(m)."""

from __future__ import annotations

import pytest

from anomalens import emissions
from anomalens.emissions import EmissionsMeter, tradeoff


def test_tradeoff_by_hand() -> None:
    assert tradeoff(2.0, 0.8) == pytest.approx(2.0 / 4.0)  # odds 0.8 / 0.2 = 4
    assert tradeoff(2.0, 0.5) == pytest.approx(2.0)
    assert tradeoff(2.0, 0.0) == float("inf") and tradeoff(2.0, 1.0) == 0.0


def test_estimate_without_rapl(monkeypatch) -> None:
    monkeypatch.setattr(emissions, "_rapl_files", lambda: [])
    cpu = iter([100.0, 136.0])  # 36 CPU-seconds inside the block
    monkeypatch.setattr(emissions, "_cpu_seconds", lambda: next(cpu))
    monkeypatch.setitem(__import__("sys").modules, "codecarbon", None)  # as if not installed
    with EmissionsMeter(carbon_intensity=500.0, watts_per_core=10.0) as meter:
        pass
    result = meter.result()
    assert result["energy_kwh"] == pytest.approx(36 * 10 / 3.6e6)
    assert result["co2_g"] == pytest.approx(36 * 10 / 3.6e6 * 500)
    assert "no RAPL counters" in result["energy_source"] and "estimated" in result["energy_source"]


def test_result_before_exit_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="after the with-block"):
        EmissionsMeter().result()
