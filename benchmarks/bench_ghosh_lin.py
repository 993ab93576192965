"""Benchmark the Ghosh-Lin model (recurstudy.models.ghosh_lin) on simulated cohorts with deaths.

Prints, for cohorts of 1k, 10k and 100k participants (recurstudy.simulate, 182 days of
follow-up, whole days, about 15% dying), the wall time and peak numpy memory (tracemalloc) of
the proportional means regression (Newton-Raphson and robust variance with the censoring term)
and of the marginal mean of both arms (robust variance over participants x episode days, in
chunks of at most 4 million cells).

Usage: ``python benchmarks/bench_ghosh_lin.py [--sizes 1000 10000 100000]``
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from recurstudy.derive import counting_process
from recurstudy.models.ghosh_lin import (
    ghosh_lin_regression,
    marginal_mean_table,
    rows_from_counting_process,
)
from recurstudy.simulate import SimulationParams, simulate_cohort


def _timed(fn, *args):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(*args)
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, wall, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    args = ap.parse_args()
    config = {"arms": {"control": "control", "intervention": "intervention"}, "covariates": {}}
    head = ("participants", "rows", "regression s", "MiB", "means s", "MiB")
    print(" ".join(f"{h:>13}" for h in head))
    for n in args.sizes:
        p = SimulationParams(n=n, seed=5, death_rate_per_day=0.001, death_frailty_link=1.0)
        t = simulate_cohort(p)
        rows = rows_from_counting_process(
            counting_process(t["participants"], t["episodes"], config)
        )
        arm = (rows["arm"].astype(str) == "intervention").to_numpy(float)[:, None]
        cols = [rows[c] for c in ("entry", "exit", "status")]
        _, wr, mr = _timed(ghosh_lin_regression, *cols, arm, rows["participant_id"])
        _, wm, mm = _timed(marginal_mean_table, rows, ("control", "intervention"))
        print(
            " ".join(
                f"{v:>13}"
                for v in (n, len(rows), f"{wr:.3f}", f"{mr:.1f}", f"{wm:.3f}", f"{mm:.1f}")
            )
        )


if __name__ == "__main__":
    main()
