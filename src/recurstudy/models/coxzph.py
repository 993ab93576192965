"""Test of proportional hazards as R's ``survival::cox.zph`` computes it since survival 3.0.

Until survival 2.44 (and in lifelines' ``proportional_hazard_test``) the test regressed scaled
Schoenfeld residuals on a function of time, using an approximation of their variance.  Since 3.0,
R computes a proper score test instead (R/cox.zph.R with the C routines ``zph1`` for right-censored
and ``zph2`` for (start, stop] data): for each covariate x_j the Cox model is extended by a term
``x_j * g(t)``, where g is the transformed time centred at its mean over the events, and the score
test of that term's coefficient (= 0) is computed at the fitted coefficients, i.e. one Newton step
from the fit.  With p covariates and the 2p-vector of scores ``U = (0, U2)``,

* ``U2 = sum over events i of g(t_i) * (x_i - xbar(t_i))``
* the 2p x 2p information ``[[I, I_g], [I_g, I_gg]]`` with ``I_g = sum g(t) V(t)`` and
  ``I_gg = sum g(t)^2 V(t)``, where V(t) is the weighted covariance of x in the risk set at t
  (Efron or Breslow ties, as the Cox fit),

and the statistic of a term with columns J is ``U_K' solve(imat[K, K]) U_K`` with K the p
covariates plus J; GLOBAL uses all 2p.  The degrees of freedom are the number of columns.

The "km" transform is R's default: ``g(t) = 1 - S(t-)``, S the Kaplan-Meier estimate of the pooled
data (all strata together; for (start, stop] data a row is at risk at t when start < t <= stop),
taken just before t (R: ``findInterval(..., left.open = TRUE)``).

Everything is vectorised: the risk-set sums at each event time and the Efron terms are those of
:mod:`recurstudy.models.risksets` (reverse cumulative sums of the rows entering and leaving the
risk set), and there is no loop over rows or event times (only over covariate pairs).
This reproduces R 4.2 / survival 3.5-3 to rounding (see tests/test_survival_models.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from recurstudy.lazy import lazy_import
from recurstudy.models.base import chi2_sf
from recurstudy.models.risksets import PartialLikelihood, RiskSets, strata_codes

stats = lazy_import("scipy.stats")

__all__ = ["cox_zph", "zph_time_transform"]


def zph_time_transform(
    time: np.ndarray,
    event: np.ndarray,
    transform: str | Callable[[np.ndarray], np.ndarray] = "km",
    start: np.ndarray | None = None,
    risksets: RiskSets | None = None,
) -> np.ndarray:
    """The transformed time g(t) of every row, before centring (R: ``ttimes`` in cox.zph).
    ``risksets``: the pooled risk sets of these rows when the caller has them."""
    time = np.asarray(time, dtype=float)
    if callable(transform):
        return np.asarray(transform(time), dtype=float)
    if transform == "identity":
        return time.copy()
    if transform == "log":
        return np.log(time)
    if transform == "rank":
        return stats.rankdata(time, method="average").astype(float)
    if transform != "km":
        raise ValueError(f"unknown transform {transform!r} (km, rank, identity, log or a function)")
    # Kaplan-Meier of the pooled rows: at risk at t when start < t <= stop
    rs = risksets if risksets is not None else RiskSets(time, np.asarray(event, dtype=bool), start)
    utimes, d, n_risk = rs.group_time, rs.d, rs.n_at_risk()
    surv = np.concatenate([[1.0], np.cumprod(1.0 - d / n_risk)])
    # S(t-): the product over event times strictly before t
    return 1.0 - surv[np.searchsorted(utimes, time, side="left")]


def _codes(v, n: int) -> np.ndarray:
    """Integer codes 0..k-1 of stratum labels (all zero without strata)."""
    if v is None:
        return np.zeros(n, dtype=np.int64)
    return strata_codes(v)[0]


def _score_parts(
    xc: np.ndarray,
    eta: np.ndarray,
    stop: np.ndarray,
    event: np.ndarray,
    start: np.ndarray | None,
    strata: np.ndarray,
    gtime: np.ndarray,
    ties: str,
    risksets: RiskSets | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """U2 (p,) and the 2p x 2p information matrix of the zph score test (R's zph1 / zph2).

    The risk-set sums S0, S1, S2 and the tied-event sums D0, D1, D2 at each event group come from
    :mod:`recurstudy.models.risksets` (start < t <= stop, per stratum), as do the Efron terms
    (fraction f = k/d, denominator S0 - f D0).  The information blocks weight each term by
    g(t)^a, a = 0, 1, 2, where g is constant within a group.
    """
    p = xc.shape[1]
    n_strata = int(strata.max()) + 1
    rs = risksets if risksets is not None and n_strata == 1 else None
    if rs is None:
        rs = RiskSets(stop, event, start, strata, n_strata=n_strata)
    pl = PartialLikelihood(rs, xc, ties)
    m = pl.moments(eta)  # the per-stratum shift of eta cancels in the statistic
    t = pl.ties
    ev_rows, E = rs.ev_pos, rs.ngroups
    g_group = np.empty(E)
    g_group[rs.ev_group] = gtime[ev_rows]  # g(t) is a function of the time alone
    grp, f, w = t.group, t.frac, t.weight
    den = m.S0[grp] - f * m.D0[grp]
    mean = (m.S1[grp] - f[:, None] * m.D1[grp]) / den[:, None]
    g = g_group[grp]

    u2 = gtime[ev_rows] @ xc[ev_rows] - (w * g) @ mean
    imat = np.zeros((2 * p, 2 * p))
    blocks = []
    for a in range(3):  # weights g^0, g^1, g^2
        wa = w * g**a
        inv = wa / den
        c0 = np.add.reduceat(inv, t.gstart)  # per group: sum of wa / den and of wa f / den
        c1 = np.add.reduceat(inv * f, t.gstart)
        assert m.S2 is not None and m.D2 is not None  # second moments were asked for
        blk = np.einsum("g,gjk->jk", c0, m.S2) - np.einsum("g,gjk->jk", c1, m.D2)
        blk -= (wa[:, None] * mean).T @ mean
        blocks.append(blk)
    imat[:p, :p] = blocks[0]
    imat[:p, p:] = blocks[1]
    imat[p:, :p] = blocks[1].T
    imat[p:, p:] = blocks[2]
    return u2, imat


def cox_zph(
    X,
    time,
    event,
    coef,
    *,
    start=None,
    strata=None,
    ties: str = "efron",
    transform: str | Callable[[np.ndarray], np.ndarray] = "km",
    names: Sequence[str] | None = None,
    terms: Mapping[str, Sequence[int]] | None = None,
    global_test: bool = True,
    risksets: RiskSets | None = None,
) -> pd.DataFrame:
    """Proportional-hazards score test of a fitted Cox model, as R survival 3.x ``cox.zph``.

    Parameters
    ----------
    X : (n, p) covariates of the fit (the rows the model used).
    time, event : stop time (or the time of right-censored data) and event indicator.
    coef : (p,) fitted coefficients (from :func:`recurstudy.models.coxph_engine.coxph_fit`);
        NaN (aliased) coefficients are dropped with their columns, as R does.
    start : entry times of (start, stop] data (R's zph2), or None.
    strata : stratum labels of a stratified fit (separate baseline hazards; the km transform still
        uses the pooled data, as R).
    ties : "efron" or "breslow", as the fit.
    transform : "km" (R's default), "rank", "identity", "log" or a function of time.
    names : column names; default from a DataFrame X or x1..xp.
    terms : optional {term name: column indices} grouping columns into one multi-df test (R's
        ``terms = TRUE`` for factors); default: one test per column.
    global_test : add the GLOBAL row.
    risksets : the unstratified, unweighted risk sets of these rows (``CoxFit.risksets``), reused
        instead of built again; ignored with strata.

    Returns a frame with columns term, statistic, df, p_value (GLOBAL last).
    """
    cols = getattr(X, "columns", None)
    Xa = np.asarray(X, dtype=float)
    if Xa.ndim == 1:
        Xa = Xa[:, None]
    n, p = Xa.shape
    if names is None:
        names = [str(c) for c in cols] if cols is not None else [f"x{j + 1}" for j in range(p)]
    names = list(names)
    stop = np.asarray(time, dtype=float).reshape(-1)
    ev = np.asarray(event).reshape(-1).astype(float) == 1.0
    st = None if start is None else np.asarray(start, dtype=float).reshape(-1)
    beta = np.asarray(coef, dtype=float).reshape(-1)
    if beta.size != p or stop.size != n or ev.size != n or (st is not None and st.size != n):
        raise ValueError("X, time, event, start and coef have inconsistent lengths")
    if terms is None:
        terms = {nm: [j] for j, nm in enumerate(names)}
    keep = ~np.isnan(beta)
    new_index = np.cumsum(keep) - 1
    groups = {}
    for term, jj in terms.items():
        kept = [int(new_index[j]) for j in jj if keep[j]]
        if kept:
            groups[term] = kept
    Xk, beta = Xa[:, keep], beta[keep]
    q = Xk.shape[1]
    if q == 0 or not ev.any():
        raise ValueError("cox_zph needs at least one estimated coefficient and one event")

    xc = Xk - Xk.mean(axis=0)  # R recentres X (zph1/zph2); the test is invariant to it
    eta = xc @ beta
    pooled = risksets if strata is None else None
    ttimes = zph_time_transform(stop, ev, transform, start=st, risksets=pooled)
    gtime = ttimes - ttimes[ev].mean()
    u2, imat = _score_parts(xc, eta, stop, ev, st, _codes(strata, n), gtime, ties, pooled)

    rows = []
    base = list(range(q))
    for term, jj in groups.items():
        kk = base + [q + j for j in jj]
        u = np.concatenate([np.zeros(q), u2[jj]])
        rows.append((term, float(u @ np.linalg.solve(imat[np.ix_(kk, kk)], u)), len(jj)))
    if global_test:
        u = np.concatenate([np.zeros(q), u2])
        rows.append(("GLOBAL", float(u @ np.linalg.solve(imat, u)), q))
    out = pd.DataFrame(rows, columns=["term", "statistic", "df"])
    out["p_value"] = chi2_sf(out["statistic"], out["df"])
    return out
