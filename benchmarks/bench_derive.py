"""Benchmark: simulate a cohort and derive the analysis datasets at scale.

Prints wall time and peak resident memory for simulate_cohort and derive_all at each size.
Usage: .venv/bin/python benchmarks/bench_derive.py [n ...]   (default 10000 100000 1000000)
"""

import resource
import sys
import time

from recurstudy.derive import derive_all
from recurstudy.simulate import SimulationParams, simulate_cohort

CONFIG = {
    "arms": {"control": "control", "intervention": "intervention"},
    "covariates": {"age": "numeric", "prior_episodes": "numeric", "baseline_pain": "numeric"},
}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(sizes: list[int]) -> None:
    print(
        f"{'participants':>12} {'episodes':>10} {'simulate s':>10} {'derive s':>9} {'cp rows':>10}"
        f" {'peak MB':>8}"
    )
    for n in sizes:
        t0 = time.perf_counter()
        t = simulate_cohort(SimulationParams(n=n, seed=1))
        t1 = time.perf_counter()
        for exclude in (False, True):
            d = derive_all(
                t["participants"], t["episodes"], {**CONFIG, "exclude_episode_time": exclude}
            )
        t2 = time.perf_counter()
        print(
            f"{n:>12} {len(t['episodes']):>10} {t1 - t0:>10.2f} {(t2 - t1) / 2:>9.2f}"
            f" {len(d['counting_process']):>10} {peak_mb():>8.0f}"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000])
