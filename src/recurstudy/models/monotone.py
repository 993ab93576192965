"""Monotone (partial) likelihood: a Cox-type coefficient that runs off to infinity.

With no episode in one arm, every event of a Cox-type model has the arm dummy at the lowest value
in its risk set, so the partial likelihood keeps rising as the arm coefficient goes to -infinity:
there is no maximum, Newton-Raphson walks about one unit per step until the log-likelihood stops
changing in its ninth digit, and the "estimate" (a hazard ratio of 1e-9, with a standard error
that means nothing) is an artefact of the stopping rule.  Every Cox-type fit of the project
applies two tests and reports such a coefficient as not estimable (:class:`NotEstimable`, the
model's failed row with the reason), never as a converged estimate:

1. **R's test** (survival 3.5-3; ``survival:::agreg.fit`` for (start, stop] data,
   ``survival:::coxph.fit`` for right-censored data).  After Newton-Raphson has converged on the
   log-likelihood, the step it would still take from the fit, ``|u' V|`` (u the score and V the
   inverse information at the fit), is compared with the coefficient, with
   ``toler.inf = sqrt(eps)`` (``coxph.control``: sqrt(1e-9) = 3.2e-5):

   - agreg.fit: variable j is flagged when ``step_j > toler.inf * (1 + |beta_j|)``;
   - coxph.fit: when ``step_j > eps`` and ``step_j > toler.inf * |beta_j|``;
   - both: also when the score is not finite.

   R then warns "Loglik converged before variable j; coefficient may be infinite" (agreg.fit:
   "beta may be infinite").  On a well-behaved likelihood Newton-Raphson converges
   quadratically and the remaining step is many orders below the tolerance; on a monotone one
   it stays near one unit.  When the fit runs out of iterations R says only that
   (coxph.fit adds "one or more coefficients may be infinite" when max(lp) > 500); the engine
   then flags a variable whose standard error has exploded relative to its coefficient.
   :func:`recurstudy.models.coxph_engine.coxph_fit` implements this test as R does
   (``CoxFit.infinite``), and ``tests/fixtures/monotone`` checks that it flags exactly the
   variables R flags.
2. **Structural** (:func:`no_event_levels`): every event has the same value of a covariate, that
   value is the covariate's lowest (or highest) anywhere, and some row with another value is at
   risk at an event time (in the event's stratum).  Then the score of that coefficient is
   negative (positive) at every value of the others: each event's covariate is the minimum of
   its risk set (Efron or Breslow ties alike, weights > 0 and offsets change nothing), so the
   supremum is at -infinity (+infinity).  For the arm dummy this is "no episode in one arm".  It
   needs no iteration count or tolerance, so it also covers fits whose search stops for another
   reason (the penalised frailty fit, Ghosh-Lin's estimating equation, a fit that ran out of
   iterations).  It does not catch every monotone likelihood (a covariate that separates the
   events only within risk sets), which test 1 does.

R's ``coxph(... + frailty(id))`` (coxpenal.fit) has no such warning; the frailty model applies
test 2, and test 1 to the fixed effects' Newton step of its final inner fit with a tolerance of
1e-3 instead of sqrt(eps), because its approximate information converges only linearly
(:data:`recurstudy.models.frailty.FRAILTY_TOLER_INF`).  The Ghosh-Lin estimating equation
(:mod:`recurstudy.models.ghosh_lin`) applies test 2, and test 1 to its last Newton step when it
did not converge.  The joint frailty model has its own check of test 2's kind.  The dropout
model of the IPCW weights (:mod:`recurstudy.models.ipcw`) is exempt: a dropout coefficient at
-infinity (no informative dropout in one arm) puts the weights at their limit, which is right.

Where a test fires, the model raises :class:`NotEstimable` through :func:`raise_if_monotone`, so
power replicates and bootstrap resamples (which call :func:`recurstudy.models.fit_spec`) count
the fit as not converged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recurstudy.models.base import ModelSpec, NotEstimable
from recurstudy.models.risksets import RiskSets

__all__ = [
    "TOLER_INF",
    "no_event_levels",
    "r_infinite",
    "raise_if_monotone",
    "monotone_reasons",
]

TOLER_INF = float(np.sqrt(1e-9))  # R: coxph.control()$toler.inf = sqrt(eps), eps = 1e-9


def r_infinite(
    u: np.ndarray,
    var: np.ndarray,
    coef: np.ndarray,
    *,
    agfit: bool,
    eps: float = 1e-9,
    toler_inf: float = TOLER_INF,
) -> np.ndarray:
    """R's "Loglik converged before variable j" test on a converged fit (see the module
    docstring, test 1): a boolean per coefficient.  ``agfit``: the (start, stop] rule of
    agreg.fit, else coxph.fit's."""
    u = np.asarray(u, dtype=float)
    step = np.abs(np.nan_to_num(u) @ np.nan_to_num(np.asarray(var, dtype=float)))
    coef = np.asarray(coef, dtype=float)
    if agfit:
        flag = step > toler_inf * (1.0 + np.abs(coef))
    else:
        flag = (step > eps) & (step > toler_inf * np.abs(coef))
    return ~np.isfinite(u) | flag


def no_event_levels(x: np.ndarray, rs: RiskSets) -> np.ndarray:
    """Per column of `x` (n, p), the value every event has when it is the column's lowest or
    highest value and rows with another value are at risk at some event time of `rs` (their
    own stratum's); NaN otherwise (see the module docstring, test 2).

    Costs one pass over the event rows per column; the risk sets are only consulted for a
    column whose events all share one value (none, on data that can estimate the model).
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    out = np.full(x.shape[1], np.nan)
    if rs.ev_pos.size == 0:
        return out
    xe = x[rs.ev_pos]
    lo, hi = xe.min(axis=0), xe.max(axis=0)
    for j in np.flatnonzero(lo == hi):
        v = lo[j]
        col = x[:, j]
        if v != col.min() and v != col.max():
            continue
        other = (col != v).astype(float)
        if np.any(rs.risk_sums(other) > 0):
            out[j] = v
    return out


def monotone_reasons(
    spec: ModelSpec,
    names: Sequence[str],
    infinite: np.ndarray | None,
    no_event: np.ndarray | None,
    x: np.ndarray | None = None,
    *,
    measure: str = "hazard ratio",
    what: str = "episodes",
    r_name: str | None = "coxph",
) -> list[str]:
    """One sentence per coefficient flagged by either test, naming the term and why."""
    p = len(names)
    infinite = np.zeros(p, dtype=bool) if infinite is None else np.asarray(infinite, dtype=bool)
    no_event = np.full(p, np.nan) if no_event is None else np.asarray(no_event, dtype=float)
    reasons = []
    r_warning = f"; R's {r_name} warns the coefficient may be infinite" if r_name else ""
    for j, term in enumerate(names):
        v = float(no_event[j])
        if np.isfinite(v):
            if term == spec.intervention_term and v in (0.0, 1.0):
                label = spec.arms["control" if v == 1.0 else "intervention"]
                why = f"no {what} in arm {label}"
                term_name = "arm"
                lowest: bool | None = v == 0.0
            else:
                lowest = None if x is None else bool(v == float(np.min(x[:, j])))
                side = {True: ", its lowest value", False: ", its highest value", None: ""}
                why = f"every one of the {what} has {term} = {v:g}{side[lowest]}"
                term_name = term
            runs = "" if lowest is None else f" to {'-' if lowest else '+'}infinity"
            reasons.append(
                f"the {measure} for {term_name} is not estimable: {why} (monotone likelihood: "
                f"the coefficient runs off{runs}{r_warning})"
            )
        elif bool(infinite[j]):
            term_name = "arm" if term == spec.intervention_term else term
            said = f"; R's {r_name} test for an infinite coefficient" if r_name else ""
            reasons.append(
                f"the {measure} for {term_name} is not estimable: the likelihood still rises as "
                "its coefficient grows without bound (monotone likelihood: the Newton step left "
                f"at the end of the fit is not small against the coefficient{said})"
            )
    return reasons


def raise_if_monotone(
    spec: ModelSpec,
    names: Sequence[str],
    infinite: np.ndarray | None,
    no_event: np.ndarray | None,
    counts: dict[str, int],
    x: np.ndarray | None = None,
    *,
    measure: str = "hazard ratio",
    what: str = "episodes",
    r_name: str | None = "coxph",
) -> None:
    """Raise :class:`NotEstimable` naming every coefficient flagged by either test (the model's
    failed row: a diverged coefficient is never reported as an estimate)."""
    reasons = monotone_reasons(
        spec, names, infinite, no_event, x, measure=measure, what=what, r_name=r_name
    )
    if reasons:
        raise NotEstimable("; ".join(reasons), **counts)
