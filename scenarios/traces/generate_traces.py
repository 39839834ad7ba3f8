"""Generate the two bandwidth traces shipped with fleetsim (synthetic, reproducible, no download).

    python scenarios/traces/generate_traces.py   # rewrites lte_uplink.csv and wifi_uplink.csv

Both are 600 s long, one row per second (``time_s,mbps``), made by the same recipe with different
parameters: a two-regime Markov chain (good coverage / congested or far from the access point) sets a
median rate; around it the rate follows a log-normal AR(1) process (fading and cross traffic are
multiplicative and correlated over a few seconds); rare deep fades drop the rate to near zero for a
second or two. The numbers are chosen to look like published uplink throughput logs, not to match any
one of them:

- ``lte_uplink.csv``: median ~8 Mbit/s in good coverage, ~1.5 Mbit/s congested, strong variation
  (sigma 0.5 in log space, correlation 0.8 s-to-s), a deep fade about every 60 s;
- ``wifi_uplink.csv``: median ~25 Mbit/s, ~8 Mbit/s under contention, milder variation (sigma 0.25,
  correlation 0.6), a deep fade about every 150 s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

PROFILES = {
    "lte_uplink": dict(seed=4, good=8.0, bad=1.5, p_bad=0.02, p_good=0.1, sigma=0.5, rho=0.8,
                       fade_every_s=60.0, floor=0.1, cap=40.0),
    "wifi_uplink": dict(seed=11, good=25.0, bad=8.0, p_bad=0.01, p_good=0.15, sigma=0.25, rho=0.6,
                        fade_every_s=150.0, floor=0.5, cap=80.0),
}  # fmt: skip


def generate(
    seed: int,
    good: float,
    bad: float,
    p_bad: float,
    p_good: float,
    sigma: float,
    rho: float,
    fade_every_s: float,
    floor: float,
    cap: float,
    duration_s: int = 600,
) -> np.ndarray:
    """Rates in Mbit/s, one per second (see the module docstring for the recipe)."""
    rng = np.random.default_rng(seed)
    rates = np.empty(duration_s)
    congested, noise, fade_left = False, 0.0, 0
    for t in range(duration_s):
        congested = rng.random() < (1 - p_good if congested else p_bad)
        noise = rho * noise + np.sqrt(1 - rho**2) * sigma * rng.standard_normal()
        if fade_left == 0 and rng.random() < 1.0 / fade_every_s:
            fade_left = int(rng.integers(1, 3))
        median = bad if congested else good
        rate = floor if fade_left else median * np.exp(noise)
        fade_left = max(fade_left - 1, 0)
        rates[t] = np.clip(rate, floor, cap)
    return np.round(rates, 3)


def write_trace(path: Path, rates: np.ndarray) -> None:
    lines = ["time_s,mbps", *(f"{t},{r:g}" for t, r in enumerate(rates))]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    for name, params in PROFILES.items():
        rates = generate(**params)
        write_trace(HERE / f"{name}.csv", rates)
        print(f"{name}.csv: mean {rates.mean():.2f} Mbit/s, min {rates.min()}, max {rates.max()}")
