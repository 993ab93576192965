"""Benchmark the shared gamma-frailty Cox model (recurstudy.models.frailty).

Simulates cohorts with :func:`recurstudy.simulate.simulate_cohort` (frailty variance 0.5, rate
ratio 0.5) and derives their counting-process intervals (episode days excluded, as the simulated
process is not at risk during an episode), then times :func:`frailty_cox_fit` with arm and three
covariates: best of --repeat, wall clock and process CPU time, peak numpy memory (tracemalloc),
outer (theta) and total Newton iterations, and the time per Newton iteration.  The full theta
search refits the model about six times.

Usage: ``python benchmarks/bench_frailty.py [--sizes 300 1000 10000 30000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from recurstudy.derive import counting_process
from recurstudy.models.base import design
from recurstudy.models.frailty import frailty_cox_fit
from recurstudy.simulate import SimulationParams, simulate_cohort

CONFIG = {
    "arms": {"control": "control", "intervention": "intervention"},
    "exclude_episode_time": True,
    "covariates": {"age": "numeric", "prior_episodes": "numeric", "baseline_pain": "numeric"},
}
RHS = "arm + age + prior_episodes + baseline_pain"


def cohort(n: int, seed: int = 7):
    sim = simulate_cohort(SimulationParams(n=n, seed=seed, frailty_var=0.5, rate_ratio=0.5))
    cp = counting_process(sim["participants"], sim["episodes"], CONFIG)
    X, names = design(RHS, cp, intercept=False)
    return {
        "X": X.to_numpy(),
        "start": cp["start"].to_numpy(float),
        "stop": cp["stop"].to_numpy(float),
        "event": cp["event"].to_numpy(),
        "group": cp["participant_id"].to_numpy(),
        "names": names,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[300, 1_000, 10_000, 30_000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(
        f"{'particip':>9} {'intervals':>10} {'events':>8} {'wall s':>7} {'cpu s':>7} "
        f"{'peak MB':>8} {'outer/NR':>9} {'ms/NR':>7}  theta / log rate ratio (se)"
    )
    for n in args.sizes:
        d = cohort(n)
        walls, cpus = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            fit = frailty_cox_fit(
                d["X"], d["start"], d["stop"], d["event"], d["group"], names=d["names"]
            )
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        tracemalloc.start()
        frailty_cox_fit(d["X"], d["start"], d["stop"], d["event"], d["group"])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"{n:>9} {d['stop'].size:>10} {fit.n_events:>8} {min(walls):>7.3f} {min(cpus):>7.3f} "
            f"{peak / 2**20:>8.1f} {fit.outer_iterations:>4}/{fit.newton_iterations:<4} "
            f"{1000 * min(walls) / max(fit.newton_iterations + fit.outer_iterations, 1):>7.2f}  "
            f"{fit.theta:.4f} / {fit.coef[0]:.4f} ({fit.se[0]:.4f}) "
            f"{'' if fit.converged else fit.message}"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f} (wall time is inflated when > 2)")
    print(f"truth: theta 0.5, log rate ratio {np.log(0.5):.4f}")


if __name__ == "__main__":
    main()
