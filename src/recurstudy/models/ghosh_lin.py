"""Ghosh-Lin marginal mean and proportional means model with a terminal event (death).

When death ends the episode process, the Andersen-Gill rate and the Nelson-Aalen mean function
answer "how often, among those still alive and followed"; the expected number of episodes per
participant by day t, counting none after death (Cook and Lawless 1997; Ghosh and Lin 2000),
is instead mu(t) = E N(min(t, D)): the while-alive marginal mean.  This module estimates it per
arm without a model, and the ratio of the two arms' means by the Ghosh-Lin (2002) proportional
means regression, as R's ``mets::recurrentMarginal`` and ``mets::recreg`` do.

Data (``counting_process`` of :mod:`recurstudy.derive`)
-------------------------------------------------------
Rows (start, stop] with ``event`` (an episode at stop) and ``terminal`` (1 on the participant's
last row when follow-up ended by a terminal event, see the config's ``terminal_events``).  A
participant's follow-up ends at their last ``stop``: by death (terminal) or by censoring
(completed, withdrawn, lost).  Row r is at risk at t when start_r < t <= stop_r (R's
convention, :class:`recurstudy.models.risksets.RiskSets`); every risk set below, the censoring
and death Kaplan-Meier included, is over these rows, as mets's are (with episode time excluded
from the time at risk, a participant inside an episode is in none of them).

Ties (same day) follow mets's order within a time: episodes at t come before deaths and
censorings at t (the dying or censored participant is at risk of an episode at t; the death
and censoring Kaplan-Meier factors at t are not yet applied to episodes at t), and tied
episodes share one risk set (Breslow).  mets instead gives tied episodes sequentially
shrinking risk sets in an unspecified order, so on data with tied episode times the two
differ by a small amount (the test fixtures break ties to compare; see tests/test_ghosh_lin.py).

Marginal mean (per arm; mets::recurrentMarginal)
------------------------------------------------
Y(t): rows at risk; dN_R(t), dN_D(t): episodes and deaths at t; S(t-) = prod_{s < t}
(1 - dN_D(s) / Y(s)) the Kaplan-Meier survival from death just before t;
  mu(t) = sum_{s <= t} S(s-) dN_R(s) / Y(s).
Influence of participant i (Ghosh and Lin 2000), with dM_i^R = dN_i^R - Y_i dN_R / Y and dM_i^D
likewise:
  psi_i(t) = int_0^t S(u-) / Y(u) dM_i^R(u) - mu(t) int_0^t dM_i^D(u) / Y(u)
             + int_0^t mu(u) / Y(u) dM_i^D(u),
the robust variance V(t) = sum_i psi_i(t)^2 (mets's ``se.mu^2``) and the interval
mu(t) exp(-/+ z sqrt(V) / mu(t)) (log-transformed, as mets's summaries; it stays positive).
With no death, S = 1 and mu is the Nelson-Aalen mean cumulative function with its
Lawless-Nadeau variance (:mod:`recurstudy.models.marginal`).

Proportional means regression (mets::recreg, Ghosh and Lin 2002)
-----------------------------------------------------------------
E{dN*(t) | Z} = exp(Z'beta) dmu_0(t) for the while-alive process N*.  Participants who died
stay in the risk set after death with inverse-probability-of-censoring weight
G(t-) / G(D_i), G the Kaplan-Meier survival of censoring (over all rows, or per arm with
``censoring_strata: arm``: R's ``cens.model = ~strata(arm)``); the estimating equation at the
episode times t_j (Breslow ties) is
  U(beta) = sum_j [sum_{episodes at t_j} Z - d_j S1(t_j) / S0(t_j)] = 0,
  S_k(t) = sum_{rows at risk} Z^k e^{Z'beta} + sum_{i died, D_i < t} G(t-) / G(D_i) Z_i^k
  e^{Z_i'beta},
solved by Newton-Raphson.  Robust variance I^-1 (sum_i phi_i phi_i') I^-1 with phi_i the sum of
(1) the rows' score residuals int (Z - E) dM_i, (2) for a participant who died, minus the
weighted compensator after death int_{t > D_i} G(t-)/G(D_i) e^{Z_i'beta} (Z_i - E(t)) dmu_0(t),
and (3) the censoring martingale term of the estimated weights, int q(s) / y(s) dM_i^C(s) with
q(s) = sum_{i died, D_i <= s} e^{Z_i'beta} / G(D_i) int_{t > s} G(t-) (Z_i - E(t)) dmu_0(t) and
y(s) the rows at risk of censoring (mets's ``iid``: ``UU + MGc``).  exp(beta) of the arm term
is the ratio of the while-alive marginal means, intervention vs control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd

from recurstudy.contract import ID
from recurstudy.lazy import lazy_import
from recurstudy.models.base import (
    ExtraTable,
    Model,
    ModelDescription,
    ModelResult,
    ModelSpec,
    NotEstimable,
    design,
    option,
    register,
    tidy,
)
from recurstudy.models.monotone import TOLER_INF, no_event_levels, raise_if_monotone
from recurstudy.models.risksets import RiskSets, strata_codes
from recurstudy.models.variance import cluster_sums

stats = lazy_import("scipy.stats")

__all__ = [
    "GhoshLin",
    "GhoshLinFit",
    "ghosh_lin_regression",
    "marginal_mean_terminal",
    "rows_from_counting_process",
]

EPISODE, DEATH, CENSORED = 1, 2, 0


# ------------------------------------------------------------------------------- data layout


def rows_from_counting_process(cp: pd.DataFrame) -> pd.DataFrame:
    """The (entry, exit, status) rows of the estimators: status 1 an episode at ``stop``, 2 the
    terminal event, 0 censoring; a participant whose last row ends in an episode on the day
    follow-up ends gets a zero-length end row (stop, stop] carrying the death or censoring
    (at risk at no time: it only marks the end, after the episode of that day).

    Needs the columns participant_id, start, stop, event and terminal (derive's
    ``counting_process``); other columns are kept.
    """
    missing = [c for c in (ID, "start", "stop", "event", "terminal") if c not in cp.columns]
    if missing:
        raise NotEstimable(
            f"the counting_process dataset has no {', '.join(missing)} column: re-run derive "
            "(the terminal column marks deaths)"
        )
    df = cp.reset_index(drop=True)
    last = ~df[ID].duplicated(keep="last").to_numpy()
    event = df["event"].to_numpy().astype(bool)
    terminal = df["terminal"].to_numpy().astype(bool)
    status = np.where(event, EPISODE, np.where(terminal, DEATH, CENSORED))
    out = df.assign(entry=df["start"].astype(float), exit=df["stop"].astype(float), status=status)
    ends = out[last & event].copy()
    if len(ends):
        ends["entry"] = ends["exit"]
        ends["status"] = np.where(terminal[last & event], DEATH, CENSORED)
        ends["event"] = 0
        out = pd.concat([out, ends]).sort_index(kind="mergesort").reset_index(drop=True)
    return out


def _at_risk(
    entry: np.ndarray, exit: np.ndarray, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the range [lo, hi) of the indices of the sorted `times` it is at risk at
    (entry < t <= exit)."""
    lo = np.searchsorted(times, entry, side="right")
    hi = np.searchsorted(times, exit, side="right")
    return lo, np.maximum(hi, lo)


def _range_sums(lo: np.ndarray, hi: np.ndarray, values: np.ndarray, n_times: int) -> np.ndarray:
    """sum over rows of values_r at each time index in [lo_r, hi_r): (T,) or (T, k)."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 2:
        return np.column_stack(
            [_range_sums(lo, hi, values[:, j], n_times) for j in range(values.shape[1])]
        ).reshape(n_times, values.shape[1])
    flow = np.bincount(lo, weights=values, minlength=n_times + 1)
    flow -= np.bincount(hi, weights=values, minlength=n_times + 1)
    return np.cumsum(flow)[:n_times]


def _row_integrals(lo: np.ndarray, hi: np.ndarray, per_time: np.ndarray) -> np.ndarray:
    """For each row, the sum of ``per_time`` (T,) or (T, k) over its at-risk indices."""
    per_time = np.asarray(per_time, dtype=float)
    c = np.concatenate([np.zeros((1, *per_time.shape[1:])), np.cumsum(per_time, axis=0)])
    return c[hi] - c[lo]


# ------------------------------------------------------------------ censoring Kaplan-Meier


@dataclass(frozen=True)
class _Censoring:
    """Kaplan-Meier survival of censoring per stratum, on the rows' risk sets."""

    times: np.ndarray  # (K,) distinct censoring times (all strata)
    strata: np.ndarray  # (n,) censoring stratum code of each row
    n_strata: int
    surv: np.ndarray  # (n_strata, K) G_c just after each censoring time
    hazard: np.ndarray  # (n_strata, K) d_c / y_c at each censoring time
    at_risk: np.ndarray  # (n_strata, K) y_c

    def before(self, t: np.ndarray) -> np.ndarray:
        """G_c(t-) for every stratum: (n_strata, len(t))."""
        k = np.searchsorted(self.times, t, side="left")
        return np.hstack([np.ones((self.n_strata, 1)), self.surv])[:, k]

    def at(self, t: np.ndarray) -> np.ndarray:
        """G_c(t) (censorings at t included) for every stratum: (n_strata, len(t))."""
        k = np.searchsorted(self.times, t, side="right")
        return np.hstack([np.ones((self.n_strata, 1)), self.surv])[:, k]


def _censoring_km(
    entry: np.ndarray, exit: np.ndarray, censored: np.ndarray, strata: np.ndarray, n_strata: int
) -> _Censoring:
    times = np.unique(exit[censored])
    lo, hi = _at_risk(entry, exit, times)
    K = times.size
    at_risk = np.zeros((n_strata, K))
    d = np.zeros((n_strata, K))
    for c in range(n_strata):
        rows = strata == c
        at_risk[c] = _range_sums(lo[rows], hi[rows], np.ones(rows.sum()), K)
        cc = rows & censored
        d[c] = np.bincount(np.searchsorted(times, exit[cc]), minlength=K)
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(d > 0, d / at_risk, 0.0)
    return _Censoring(times, strata, n_strata, np.cumprod(1.0 - hazard, axis=1), hazard, at_risk)


# ------------------------------------------------------------------------- the regression


@dataclass
class GhoshLinFit:
    """A fitted proportional means model: coefficients, robust and naive covariance, the
    baseline mean increments and the participants' influence terms."""

    coef: np.ndarray
    var: np.ndarray  # robust (mets's var: iid = UU + MGc)
    var_naive_iid: np.ndarray  # without the censoring term (mets's var1)
    information: np.ndarray
    iterations: int
    converged: bool
    times: np.ndarray  # episode times
    dmu0: np.ndarray  # baseline mean increments d_j / S0(t_j)
    n_deaths: int
    n_censored: int
    # Monotone estimating equation (recurstudy.models.monotone): per coefficient, the last
    # Newton step of a fit that did not converge still exceeds toler.inf * (1 + |beta|), and the
    # covariate value every episode has when it is the covariate's lowest or highest with other
    # values at risk (else NaN).
    infinite: np.ndarray | None = None
    no_event_level: np.ndarray | None = None


def ghosh_lin_regression(
    entry,
    exit,
    status,
    X,
    ids,
    censoring_strata=None,
    *,
    tol: float = 1e-10,
    max_iter: int = 50,
) -> GhoshLinFit:
    """Ghosh-Lin proportional means regression with IPCW for death (see the module docstring).

    ``status``: 1 episode at exit, 2 death at exit, 0 censored at exit (every row ending
    without an event is a censoring, as mets's ``cens.code = 0``; derive's rows end so only at
    the end of follow-up).  ``X`` (n, p) without intercept; ``ids`` cluster labels;
    ``censoring_strata`` labels of the censoring Kaplan-Meier's strata (None: one).
    """
    entry = np.asarray(entry, dtype=float)
    exit = np.asarray(exit, dtype=float)
    status = np.asarray(status, dtype=np.int64)
    X = np.asarray(X, dtype=float).reshape(exit.size, -1)
    n, p = X.shape
    cl, n_cl = strata_codes(ids)
    censored = status == CENSORED  # as mets's cens.code = 0: a row ending without an event
    if censoring_strata is None:
        cs, n_cs = np.zeros(n, dtype=np.int64), 1
    else:
        cs, n_cs = strata_codes(censoring_strata)
    G = _censoring_km(entry, exit, censored, cs, n_cs)

    if not (status == EPISODE).any():
        raise NotEstimable("no episodes: the proportional means model is not estimable")
    # The episode times and each row's range of them at risk (start < t <= stop), Breslow.
    rs = RiskSets(exit, status == EPISODE, start=entry)
    jt, T = rs.group_time, rs.ngroups
    ev, ev_t, d = rs.ev_pos, rs.ev_group, rs.d
    XX = (X[:, :, None] * X[:, None, :]).reshape(n, p * p)

    dead = np.flatnonzero(status == DEATH)
    dead_c = cs[dead]
    G_dead = G.at(exit[dead])[dead_c, np.arange(dead.size)] if dead.size else np.zeros(0)
    if np.any(G_dead <= 0):
        raise NotEstimable(
            "a death after the censoring Kaplan-Meier reached 0: the inverse-probability-of-"
            "censoring weights are not defined"
        )
    w_dead = 1.0 / G_dead
    pos_dead = np.searchsorted(jt, exit[dead], side="right")  # episode times t > D_i
    G_minus = G.before(jt)  # (n_cs, T): G_c(t_j-)

    # Every episode at a covariate's lowest (highest) value: the score of its coefficient is
    # negative (positive) everywhere, the same structure as a Cox partial likelihood.
    no_event = no_event_levels(X, rs)
    ev_X = np.zeros((T, p))
    for j in range(p):
        ev_X[:, j] = np.bincount(ev_t, weights=X[ev, j], minlength=T)

    def moments(beta):
        eta = X @ beta
        shift = float(eta.max())
        r = np.exp(eta - shift)
        S0 = rs.risk_sums(r)
        S1 = rs.risk_sums(X * r[:, None])
        S2 = rs.risk_sums(XX * r[:, None])
        for c in range(n_cs):
            sel = dead_c == c
            if not sel.any():
                continue
            rd = r[dead[sel]] * w_dead[sel]
            pos = pos_dead[sel]
            cum0 = np.cumsum(np.bincount(pos, weights=rd, minlength=T + 1))[:T]
            S0 = S0 + G_minus[c] * cum0
            for k, (Sk, V) in enumerate(((S1, X), (S2, XX))):
                V_d = V[dead[sel]] * rd[:, None]
                cum = np.column_stack(
                    [
                        np.cumsum(np.bincount(pos, weights=V_d[:, j], minlength=T + 1))[:T]
                        for j in range(V.shape[1])
                    ]
                )
                if k == 0:
                    S1 = Sk + G_minus[c][:, None] * cum
                else:
                    S2 = Sk + G_minus[c][:, None] * cum
        return r, shift, S0, S1, S2

    beta = np.zeros(p)
    step = np.zeros(p)
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        r, shift, S0, S1, S2 = moments(beta)
        E = S1 / S0[:, None]
        U = ev_X.sum(axis=0) - (d[:, None] * E).sum(axis=0)
        V2 = S2 / S0[:, None] - (E[:, :, None] * E[:, None, :]).reshape(T, p * p)
        info = (d[:, None] * V2).sum(axis=0).reshape(p, p)
        try:
            step = np.linalg.solve(info, U)
        except np.linalg.LinAlgError:
            raise NotEstimable(
                "singular information matrix: the design cannot be estimated"
            ) from None
        beta = beta + step
        if not np.all(np.isfinite(beta)):
            raise NotEstimable("the proportional means fit diverged")
        if np.max(np.abs(step)) < tol:
            converged = True
            break
    r, shift, S0, S1, S2 = moments(beta)
    E = S1 / S0[:, None]
    V2 = S2 / S0[:, None] - (E[:, :, None] * E[:, None, :]).reshape(T, p * p)
    info = (d[:, None] * V2).sum(axis=0).reshape(p, p)
    dmu = d / S0  # on the shifted scale: r * dmu is invariant

    # (1) score residuals of the rows: int (X - E) dM_r.
    resid = np.zeros((n, p))
    resid[ev] = X[ev] - E[ev_t]
    lam_row = rs.row_sums(dmu)
    elam_row = rs.row_sums(E * dmu[:, None])
    resid -= r[:, None] * (X * lam_row[:, None] - elam_row)
    phi = cluster_sums(resid, cl, n_cl)
    phi_naive = phi.copy()

    # (2) weighted compensator after death; (3) censoring martingale of the weights.
    if dead.size:
        # H_c(after index k) = sum_{j >= k} G_c(t_j-) dmu_j, and with E.
        H = np.zeros((n_cs, T + 1))
        EH = np.zeros((n_cs, T + 1, p))
        for c in range(n_cs):
            g = G_minus[c] * dmu
            H[c, :T] = np.cumsum(g[::-1])[::-1]
            EH[c, :T] = np.cumsum((E * g[:, None])[::-1], axis=0)[::-1]
        rd = r[dead] * w_dead
        term2 = -(X[dead] * H[dead_c, pos_dead][:, None] - EH[dead_c, pos_dead]) * rd[:, None]
        phi += cluster_sums(term2, cl[dead], n_cl)
        phi_naive = phi.copy()
        if censored.any():
            phi += _censoring_term(
                G, entry, exit, censored, cs, cl, n_cl, jt, H, EH, X, dead, dead_c, rd
            )
    try:
        iinfo = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        raise NotEstimable("singular information matrix: the design cannot be estimated") from None
    D = phi @ iinfo
    Dn = phi_naive @ iinfo
    return GhoshLinFit(
        coef=beta,
        var=D.T @ D,
        var_naive_iid=Dn.T @ Dn,
        information=info,
        iterations=iterations,
        converged=converged,
        times=jt,
        dmu0=dmu * np.exp(-shift),
        n_deaths=int(dead.size),
        n_censored=int(censored.sum()),
        infinite=(not converged) & (np.abs(step) > TOLER_INF * (1.0 + np.abs(beta))),
        no_event_level=no_event,
    )


def _censoring_term(G, entry, exit, censored, cs, cl, n_cl, jt, H, EH, X, dead, dead_c, rd):
    """sum over censorings of q(s) / y(s) dM_i^C(s) per participant (module docstring, (3))."""
    p = X.shape[1]
    K = G.times.size
    lo, hi = _at_risk(entry, exit, G.times)
    # Position of each censoring time among the episode times: H after the s (t > s).
    pos_s = np.searchsorted(jt, G.times, side="right")
    out = np.zeros((n_cl, p))
    for c in range(G.n_strata):
        sel = dead_c == c
        if not sel.any():
            continue
        # A_c(s) = sum_{dead, D_i <= s} rd_i ; B_c(s) = sum rd_i X_i  (s: censoring times).
        k_dead = np.searchsorted(G.times, exit[dead[sel]], side="left")  # first s >= D_i
        A = np.cumsum(np.bincount(k_dead, weights=rd[sel], minlength=K + 1))[:K]
        B = np.column_stack(
            [
                np.cumsum(np.bincount(k_dead, weights=rd[sel] * X[dead[sel], j], minlength=K + 1))[
                    :K
                ]
                for j in range(p)
            ]
        ).reshape(K, p)
        q = B * H[c, pos_s][:, None] - A[:, None] * EH[c, pos_s]
        y = G.at_risk[c]
        haz = G.hazard[c]
        with np.errstate(divide="ignore", invalid="ignore"):
            q_y = np.where(y[:, None] > 0, q / y[:, None], 0.0)
            comp = np.where(y[:, None] > 0, q * (haz / y)[:, None], 0.0)
        rows_c = np.flatnonzero(cs == c)
        # dN^C: the censored rows of stratum c.
        cens_rows = rows_c[censored[rows_c]]
        k_cens = np.searchsorted(G.times, exit[cens_rows])
        contrib = np.zeros((exit.size, p))
        contrib[cens_rows] = q_y[k_cens]
        contrib[rows_c] -= _row_integrals(lo[rows_c], hi[rows_c], comp)
        out += cluster_sums(contrib, cl, n_cl)
    return out


# --------------------------------------------------------------------- the marginal mean


@dataclass
class MarginalMean:
    """The while-alive marginal mean of one arm at its episode times."""

    times: np.ndarray
    mean: np.ndarray
    std_err: np.ndarray
    surv: np.ndarray  # S(t-) from death


def marginal_mean_terminal(entry, exit, status, ids) -> MarginalMean:
    """Ghosh-Lin nonparametric mean number of episodes by t with death as a terminal event, and
    its robust standard error (module docstring), at the episode times of the rows given."""
    entry = np.asarray(entry, dtype=float)
    exit = np.asarray(exit, dtype=float)
    status = np.asarray(status, dtype=np.int64)
    cl, n_cl = strata_codes(ids)
    if not (status == EPISODE).any():
        return MarginalMean(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    isR, isD = status == EPISODE, status == DEATH
    # One risk-set grid over the episode and death times (start < t <= stop).
    rs = RiskSets(exit, isR | isD, start=entry)
    times, T, lo, hi = rs.group_time, rs.ngroups, rs.hl, rs.hs
    Y = rs.n_at_risk().astype(float)
    k = np.zeros(exit.size, dtype=np.int64)
    k[rs.ev_pos] = rs.ev_group
    dR = np.bincount(k[isR], minlength=T).astype(float)
    dD = np.bincount(k[isD], minlength=T).astype(float)
    hR, hD = dR / Y, dD / Y
    S_minus = np.concatenate([[1.0], np.cumprod(1.0 - hD)[:-1]])
    mu = np.cumsum(S_minus * hR)
    # psi_i(t) = A_i(t) - mu(t) B_i(t) + C_i(t): integrands (per time) of dM^R and dM^D.
    fA, fB, fC = S_minus / Y, 1.0 / Y, mu / Y
    out_idx = np.flatnonzero(dR > 0)
    var = np.zeros(out_idx.size)
    # Dense participants x times, in chunks of participants to bound the memory.
    chunk = max(1, int(4_000_000 // max(T, 1)))
    order = np.argsort(cl, kind="stable")
    starts = np.searchsorted(cl[order], np.arange(0, n_cl, chunk))
    bounds = [*starts, order.size]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        rows = order[a:b]
        if rows.size == 0:
            continue
        ids_c = cl[rows] - cl[rows].min()
        m = int(ids_c.max()) + 1
        # at-risk indicator increments, then per time the dN and Y_i parts.
        risk = np.zeros((m, T + 1))
        np.add.at(risk, (ids_c, lo[rows]), 1.0)
        np.add.at(risk, (ids_c, hi[rows]), -1.0)
        Yi = np.cumsum(risk, axis=1)[:, :T]
        dNR = np.zeros((m, T))
        dND = np.zeros((m, T))
        rr, rd = rows[isR[rows]], rows[isD[rows]]
        np.add.at(dNR, (cl[rr] - cl[rows].min(), k[rr]), 1.0)
        np.add.at(dND, (cl[rd] - cl[rows].min(), k[rd]), 1.0)
        dMR = dNR - Yi * hR
        dMD = dND - Yi * hD
        A = np.cumsum(dMR * fA, axis=1)
        B = np.cumsum(dMD * fB, axis=1)
        C = np.cumsum(dMD * fC, axis=1)
        psi = (A - mu * B + C)[:, out_idx]
        var += (psi**2).sum(axis=0)
    return MarginalMean(times[out_idx], mu[out_idx], np.sqrt(var), S_minus[out_idx])


# ---------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class GhoshLinOptions:
    """Options of the Ghosh-Lin model."""

    censoring_strata: Literal["none", "arm"] = option(
        "none",
        doc="Kaplan-Meier of censoring for the weights: one (none; mets::recreg's default "
        "cens.model = ~1) or per arm (arm: cens.model = ~strata(arm))",
    )


TERMINAL_STRATEGY = (
    "while alive: episodes are counted up to death (a terminal event) and none after it; the "
    "mean number of episodes per participant includes those who died, so an intervention that "
    "shortened life would look like fewer episodes"
)
DROPOUT_STRATEGY = (
    "hypothetical: as if participants who dropped out had stayed in follow-up, assuming their "
    "censoring is independent of the episodes given arm (weights by the censoring Kaplan-Meier)"
)


@register
class GhoshLin(Model):
    """Ghosh-Lin proportional means model and marginal means with death as a terminal event.

    Tidy rows: ``arm[T.<label>]`` (+ covariates), log of the ratio of while-alive marginal
    means, robust SE (mets::recreg's), Wald interval.  Extra ``marginal_mean``: the
    nonparametric mean per arm at its episode times (``arm, time, mean, std_err, conf_low,
    conf_high``; log-transformed interval), as mets::recurrentMarginal.
    """

    kind: ClassVar[str] = "ghosh_lin"
    datasets: ClassVar[tuple[str, ...]] = ("counting_process",)
    Options: ClassVar[type] = GhoshLinOptions
    group: ClassVar[str] = "marginal rate"
    title: ClassVar[str] = "Ghosh-Lin proportional means (death as terminal event)"
    effect_measure: ClassVar[str | None] = "ratio of marginal means"
    estimand: ClassVar[str] = (
        "ratio of the expected numbers of episodes per participant while alive (none counted "
        "after death), intervention vs control, over follow-up; censoring handled by inverse-"
        "probability-of-censoring weights; robust errors"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = (
        ExtraTable(
            "marginal_mean",
            "Mean number of episodes per participant by day t while alive (Ghosh-Lin, death as "
            "terminal event), by arm; robust standard error; log-transformed 95% interval",
            "hidden",  # drawn beside the mean cumulative function, not printed
        ),
        ExtraTable("fit", "Ghosh-Lin fit: iterations, deaths, censorings, naive SE", "hidden"),
    )
    claim_metrics: ClassVar[tuple[str, ...]] = ("rate_reduction",)
    reference: ClassVar[str] = "Ghosh and Lin (2000, 2002); Cook and Lawless (1997)"
    r_call: ClassVar[str] = (
        "mets::recreg(Event(start, stop, status) ~ arm + cluster(id), cause = 1, death.code = 2, "
        "cens.code = 0); mets::recurrentMarginal(phreg(Surv(start, stop, status == 1) ~ "
        "strata(arm) + cluster(id)), phreg(Surv(start, stop, status == 2) ~ strata(arm) + "
        "cluster(id)))"
    )

    def describe(self, spec: ModelSpec | None = None) -> ModelDescription:
        from dataclasses import replace

        desc = super().describe(spec)
        strategies = (
            ("terminal event", TERMINAL_STRATEGY),
            ("informative dropout", DROPOUT_STRATEGY),
        )
        if spec is not None and spec.options.get("censoring_strata") == "arm":
            desc = replace(
                desc,
                r_call=desc.r_call.replace(
                    "cens.code = 0)", "cens.code = 0, cens.model = ~strata(arm))"
                ),
            )
        return replace(desc, strategies=strategies)

    def fit(self, spec: ModelSpec, *, counting_process: pd.DataFrame) -> ModelResult:
        control, interv = spec.arms["control"], spec.arms["intervention"]
        rows = rows_from_counting_process(counting_process)
        counts = {
            "n_participants": int(rows[ID].nunique()),
            "n_events": int((rows["status"] == EPISODE).sum()),
        }
        arm = rows["arm"].astype(str)
        missing = [a for a in (control, interv) if not (arm == a).any()]
        if missing:
            raise NotEstimable(f"no participants in the {' and '.join(missing)} arm", **counts)
        if counts["n_events"] == 0:
            raise NotEstimable(
                "no episodes: the proportional means model is not estimable", **counts
            )
        X, names = design(spec.formula, rows, intercept=False)
        used = rows.loc[X.index]
        cstrata = (
            used["arm"].astype(str).to_numpy()
            if spec.options.get("censoring_strata") == "arm"
            else None
        )
        n_used = {
            "n_participants": int(used[ID].nunique()),
            "n_events": int((used["status"] == EPISODE).sum()),
        }
        # Every episode at a covariate's lowest or highest value (no episodes in one arm...):
        # the estimating equation has no root (recurstudy.models.monotone), before Newton-
        # Raphson runs into a singular information matrix.
        episode_sets = RiskSets(
            used["exit"].to_numpy(float),
            used["status"].to_numpy() == EPISODE,
            start=used["entry"].to_numpy(float),
        )
        raise_if_monotone(
            spec,
            names,
            None,
            no_event_levels(X.to_numpy(), episode_sets),
            n_used,
            X.to_numpy(),
            measure="ratio of marginal means",
            r_name=None,
        )
        fit = ghosh_lin_regression(
            used["entry"].to_numpy(),
            used["exit"].to_numpy(),
            used["status"].to_numpy(),
            X.to_numpy(),
            used[ID].to_numpy(),
            cstrata,
        )
        # A coefficient running off to infinity that Newton-Raphson did not reach: the failed row.
        raise_if_monotone(
            spec,
            names,
            fit.infinite,
            fit.no_event_level,
            n_used,
            X.to_numpy(),
            measure="ratio of marginal means",
            r_name=None,
        )
        se = np.sqrt(np.diag(fit.var))
        message = "" if fit.converged else "Newton-Raphson did not converge"
        table = tidy(
            spec,
            names,
            fit.coef,
            se,
            robust=True,
            log_likelihood=None,
            converged=fit.converged,
            message=message,
            **n_used,
        )
        extras = {
            "marginal_mean": marginal_mean_table(rows, (control, interv), spec.conf_level),
            "fit": pd.DataFrame(
                {
                    "term": names,
                    "std_error_naive_weights": np.sqrt(np.diag(fit.var_naive_iid)),
                    "iterations": fit.iterations,
                    "n_deaths": fit.n_deaths,
                    "n_censored": fit.n_censored,
                    "censoring_strata": spec.options.get("censoring_strata", "none"),
                }
            ),
        }
        return ModelResult(table, extras, converged=fit.converged, message=message)


def marginal_mean_table(
    rows: pd.DataFrame, arms: tuple[str, str], conf_level: float = 0.95
) -> pd.DataFrame:
    """The ``marginal_mean`` extra: per arm (control first), the Ghosh-Lin mean at each episode
    time with its robust SE and log-transformed interval mean * exp(-/+ z se / mean)."""
    z = stats.norm.ppf(0.5 + conf_level / 2.0)
    parts = []
    for a in arms:
        sub = rows[rows["arm"].astype(str) == a]
        mm = marginal_mean_terminal(
            sub["entry"].to_numpy(),
            sub["exit"].to_numpy(),
            sub["status"].to_numpy(),
            sub[ID].to_numpy(),
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.exp(z * mm.std_err / mm.mean)
        parts.append(
            pd.DataFrame(
                {
                    "arm": a,
                    "time": mm.times,
                    "mean": mm.mean,
                    "std_err": mm.std_err,
                    "conf_low": mm.mean / f,
                    "conf_high": mm.mean * f,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)
