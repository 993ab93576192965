"""Benchmark and replicate study of the joint frailty model (recurstudy.models.joint_frailty).

Two parts, both on cohorts from ``simulate_joint`` of ``tests/test_joint_frailty.py`` (episodes a
Poisson process of rate 0.02 Z exp(beta arm) per day until death or day 365, death hazard
0.002 Z^alpha exp(gamma arm), Z ~ Gamma(mean 1, variance theta); truth beta = -0.5,
gamma = 0.4, theta = 0.6, alpha = 1.5):

* ``--sizes``: wall-clock time of one fit per size, with alpha fixed at 1 (closed-form
  posterior) and, for sizes up to ``--alpha-max-size``, with alpha estimated (quadrature); also
  the outer iterations and EM steps (SQUAREM) over all profile evaluations.
* ``--replicates R --n N``: the replicate study: per parameter the mean estimate, bias, Monte Carlo
  SE of the mean (SD / sqrt(R)), bias in Monte Carlo SEs, the replicate SD against the mean
  model-based SE, and the coverage of the 95% Wald interval.

Usage: ``nice python benchmarks/bench_joint_frailty.py [--sizes 10000 100000] [--alpha-max-size
10000] [--replicates 50 --n 1000]``
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

from recurstudy.models.joint_frailty import joint_frailty_fit

TRUTH = {"beta": -0.5, "gamma": 0.4, "theta": 0.6, "alpha": 1.5}


def _simulator():
    path = Path(__file__).resolve().parents[1] / "tests" / "test_joint_frailty.py"
    spec = importlib.util.spec_from_file_location("_jf_tests", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_jf_tests"] = mod
    spec.loader.exec_module(mod)
    return mod.simulate_joint


def timing(sizes: list[int], alpha_max: int) -> None:
    simulate = _simulator()
    print(f"{'n':>8} {'rows':>9} {'episodes':>9} {'deaths':>7} {'alpha':>9} "
          f"{'seconds':>8} {'outer':>6} {'EM steps':>9}")  # fmt: skip
    for n in sizes:
        X, start, stop, event, pid, term = simulate(n, **TRUTH, seed=1)
        for alpha in (1.0, None):
            if alpha is None and n > alpha_max:
                continue
            t0 = time.perf_counter()
            fit = joint_frailty_fit(X, start, stop, event, pid, term, names=["arm"], alpha=alpha)
            sec = time.perf_counter() - t0
            label = "fixed 1" if alpha is not None else "estimate"
            print(f"{n:>8} {len(stop):>9} {int(event.sum()):>9} {int(term.sum()):>7} "
                  f"{label:>9} {sec:>8.2f} {fit.iterations:>6} {fit.em_iterations:>9}"
                  f"{'' if fit.converged else '  NOT CONVERGED: ' + fit.message}")  # fmt: skip


def replicates(R: int, n: int) -> None:
    simulate = _simulator()
    keys = ["beta", "gamma", "theta", "alpha"]
    est = {k: [] for k in keys}
    se = {k: [] for k in keys}
    failed = 0
    t0 = time.perf_counter()
    for r in range(R):
        X, start, stop, event, pid, term = simulate(n, **TRUTH, seed=1000 + r)
        fit = joint_frailty_fit(X, start, stop, event, pid, term, names=["arm"])
        if not fit.converged:
            failed += 1
            continue
        vals = {"beta": (fit.beta[0], fit.se_beta[0]), "gamma": (fit.gamma[0], fit.se_gamma[0]),
                "theta": (fit.theta, fit.se_theta), "alpha": (fit.alpha, fit.se_alpha)}  # fmt: skip
        for k in keys:
            est[k].append(vals[k][0])
            se[k].append(vals[k][1])
    took = time.perf_counter() - t0
    print(f"replicates: {R} (n = {n} each, {failed} not converged), {took:.0f} s")
    print(f"{'param':>6} {'truth':>7} {'mean':>8} {'bias':>8} {'MC SE':>7} {'bias/MCSE':>9} "
          f"{'SD':>7} {'mean SE':>8} {'cover95':>8}")  # fmt: skip
    for k in keys:
        e, s = np.array(est[k]), np.array(se[k])
        m = len(e)
        sd = float(np.std(e, ddof=1))
        mc = sd / np.sqrt(m)
        bias = float(e.mean()) - TRUTH[k]
        cover = float(np.mean(np.abs(e - TRUTH[k]) <= 1.959964 * s))
        print(f"{k:>6} {TRUTH[k]:>7.3f} {e.mean():>8.4f} {bias:>8.4f} {mc:>7.4f} "
              f"{bias / mc:>9.2f} {sd:>7.4f} {s.mean():>8.4f} {cover:>8.3f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[])
    ap.add_argument("--alpha-max-size", type=int, default=10000)
    ap.add_argument("--replicates", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    if not args.sizes and not args.replicates:
        args.sizes = [10000, 100000]
    if args.sizes:
        timing(args.sizes, args.alpha_max_size)
    if args.replicates:
        replicates(args.replicates, args.n)


if __name__ == "__main__":
    main()
