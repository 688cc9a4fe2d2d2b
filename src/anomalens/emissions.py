"""Energy and CO2 accounting around training and evaluation (AE-XAD paper, sec. 5.4).

Three sources, best first:
1. CodeCarbon's offline tracker, when the user has installed ``codecarbon`` (it is not a
   dependency: it requires ``nvidia-ml-py``, and this project installs no ``nvidia-*`` package).
2. Intel/AMD RAPL energy counters in ``/sys/class/powercap`` where the kernel exposes them.
3. An estimate: the process's CPU time x a per-core power (TDP / cores; 10 W per core by default).
   Without RAPL counters the CPU power is *estimated*, and every result says so in ``energy_source``.
CO2 = energy x the grid's carbon intensity (default 475 g/kWh, the IEA world average for 2019;
pass the figure of your country).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORLD_CARBON_INTENSITY = 475.0  # g CO2 per kWh
WATTS_PER_CORE = 10.0
_RAPL = Path("/sys/class/powercap")


def _rapl_files() -> list[Path]:
    """Package-level RAPL counters (intel-rapl:N/energy_uj; AMD exposes them under the same name)."""
    if not _RAPL.is_dir():
        return []
    files = [p / "energy_uj" for p in _RAPL.glob("intel-rapl:*") if p.name.count(":") == 1]
    return [f for f in files if f.is_file() and os.access(f, os.R_OK)]


def _rapl_joules(files: list[Path]) -> float:
    return sum(int(f.read_text()) for f in files) / 1e6


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def tradeoff(co2_g: float, metric: float) -> float:
    """T(m) = E / (m / (1 - m)) of eq. (5): CO2 spent per unit of performance odds; lower is better."""
    if not 0 < metric < 1:
        return float("inf") if metric <= 0 else 0.0
    return co2_g / (metric / (1 - metric))


@dataclass
class EmissionsMeter:
    """``with EmissionsMeter() as meter: ...`` then ``meter.result()``: energy, CO2 and their source."""

    carbon_intensity: float = WORLD_CARBON_INTENSITY
    watts_per_core: float = WATTS_PER_CORE
    country_iso_code: str | None = None  # for CodeCarbon, e.g. "DEU"
    _state: dict[str, Any] = field(default_factory=dict, repr=False)

    def __enter__(self) -> EmissionsMeter:
        self._state = {"wall": time.perf_counter(), "cpu": _cpu_seconds(), "rapl": _rapl_files()}
        if self._state["rapl"]:
            self._state["joules"] = _rapl_joules(self._state["rapl"])
        try:
            from codecarbon import OfflineEmissionsTracker

            tracker = OfflineEmissionsTracker(country_iso_code=self.country_iso_code or "USA", log_level="error",
                                              save_to_file=False)
            tracker.start()
            self._state["tracker"] = tracker
        except Exception:  # not installed, or it cannot start here: fall back to our own accounting
            self._state["tracker"] = None
        return self

    def __exit__(self, *exc) -> None:
        state = self._state
        state["seconds"] = time.perf_counter() - state["wall"]
        tracker = state.get("tracker")
        if tracker is not None:
            co2_kg = tracker.stop() or 0.0
            state.update(co2_g=co2_kg * 1000, kwh=float(getattr(tracker, "_total_energy", 0.0) or 0.0),
                         source="codecarbon (offline)")
        elif state["rapl"]:
            kwh = (_rapl_joules(state["rapl"]) - state["joules"]) / 3.6e6
            state.update(kwh=kwh, co2_g=kwh * self.carbon_intensity, source="RAPL counters")
        else:
            cpu = _cpu_seconds() - state["cpu"]
            kwh = cpu * self.watts_per_core / 3.6e6
            state.update(kwh=kwh, co2_g=kwh * self.carbon_intensity,
                         source=f"estimate: no RAPL counters, CPU power estimated as {self.watts_per_core:g} W "
                                f"per busy core ({cpu:.0f} CPU-seconds)")

    def result(self) -> dict[str, Any]:
        """``co2_g``, ``energy_kwh``, ``seconds``, ``energy_source``, ``carbon_intensity_g_per_kwh``."""
        s = self._state
        if "seconds" not in s:
            raise RuntimeError("EmissionsMeter.result() is available after the with-block ends")
        return {"co2_g": s["co2_g"], "energy_kwh": s["kwh"], "seconds": s["seconds"], "energy_source": s["source"],
                "carbon_intensity_g_per_kwh": self.carbon_intensity}
