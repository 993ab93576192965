"""Shared gamma-frailty Cox model for recurrent events, as R's survival package fits it.

``coxph(Surv(start, stop, event) ~ arm + frailty(participant_id))`` in R (survival 3.5-3) uses
``frailty.gamma`` with its default ``method = "em"``: the Andersen-Gill intensity with one log
frailty w_i per participant, fitted by penalised partial likelihood, with the frailty variance
theta chosen by an outer search that maximises the marginal ("I-") likelihood.  No Python library
offers this; this module reproduces R's algorithm step by step so that the iteration path, and
hence the reported numbers, agree with R to rounding rather than to R's convergence tolerances.

The algorithm (R: coxpenal.fit, frailty.gamma, frailty.controlgam, frailty.brent,
frailty.gammacon, coxpenal.df; C: agfit5.c, cholesky3.c, chsolve3.c, chinv3.c):

* **Inner loop** (agfit5b) for a given theta: Newton-Raphson on (w, beta) for the penalised
  partial likelihood PL(beta, w) + (1/theta) sum(w_i) (the gamma penalty
  (1/theta) sum(w_i - exp(w_i)) after recentring w so that mean(exp(w)) = 1, without its constant).
  Each evaluation recentres w in place (``pfun``'s ``recenter``).  The information matrix is R's
  *sparse approximation*: the frailty block is taken as diagonal (the exact off-diagonal terms
  -sum m_ik m_jk are dropped), the frailty-covariate and covariate blocks are exact.  The step
  solves that system by a Cholesky (LDL') whose frailty block is diagonal, so only the p x p
  Schur complement is dense (cholesky3 / chsolve3): O(n_participants * p^2), never a dense
  (n_participants + p)^2 matrix.  Step halving is R's (halve towards the previous point,
  no convergence right after a halving); convergence when |1 - loglik_old / loglik_new| <= 1e-9;
  at most 20 iterations; theta = 0 fixes every frailty at 0 (an ordinary Andersen-Gill fit).
* **Outer loop** (frailty.controlgam, at most 10 fits): theta = 0, then 1, then the mean of the
  two or 2 depending on whether the I-likelihood rose by at least 1; afterwards a parabola through
  the best three points on the sqrt(theta) scale (frailty.brent, with its fall-backs), or doubling
  while the largest theta is the best.  Stops when the I-likelihood changes by less than a relative
  1e-5.  Each fit starts from the estimates of the earlier fit whose theta is closest.  The
  I-likelihood is the penalised loglik plus frailty.gammacon(d, 1/theta), d the events per
  participant.  The fit reported is the last one; R's ``fit$history[[1]]$theta`` is the next
  theta the search would try (``theta_next`` here), the printed "Variance of random effect" the
  theta of the reported fit (``theta``).
* **Variance** (coxpenal.df): with H the (approximate) information of the penalised problem and
  P the penalty's second derivative (diagonal, frailty block), ``var`` = [H^-1]_beta (R's
  ``fit$var``, printed as se(coef)) and ``var2`` = [H^-1 (H - P) H^-1]_beta (``fit$var2``,
  "se2").  The frailty term's degrees of freedom are n_participants - sum(diag([H^-1]_w) * P);
  its printed test is the Wald statistic sum(w^2 / diag([H^-1]_w)) on those df (p-value with
  df = max(df, 0.5)).
* ``fit$loglik`` = (partial likelihood at beta = 0 without frailty, partial likelihood at the fit
  with the frailties as offsets, *without* the penalty).

Everything per evaluation is vectorised, on the risk sets and partial likelihood of
:mod:`recurstudy.models.risksets` (event groups, reverse cumulative risk-set sums; per-participant
sums are ``bincount`` of per-row terms that are differences of cumulative sums over event groups).
The one quadratic term, sum_k m_ik^2, needs the risk weight of participant i at each event time:
with non-overlapping intervals per participant (derive's data) it is a per-row sum; rows of one
participant that are at risk at the same time add pair terms, found once.

Not implemented (R has them): strata, case weights, offsets, ``method = "aic"`` / ``"df"``, the
non-sparse frailty term R uses for 5 or fewer groups, ``timefix``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import pandas as pd

from recurstudy.lazy import lazy_import
from recurstudy.models.base import (
    ExtraTable,
    Model,
    ModelResult,
    ModelSpec,
    NotEstimable,
    design,
    option,
    register,
    tidy,
)
from recurstudy.models.coxph_engine import _cholesky2, _chsolve2
from recurstudy.models.monotone import no_event_levels, raise_if_monotone
from recurstudy.models.risksets import PartialLikelihood, RiskSets

stats = lazy_import("scipy.stats")

__all__ = ["FrailtyFit", "frailty_cox_fit"]

ID = "participant_id"
_TOLER_CHOL = float(np.finfo(float).eps ** 0.75)  # coxph.control()$toler.chol
_WTEST_TOLER = 1e-9  # coxph.wtest's default toler.chol
# The infinite-coefficient test on the penalised fit (recurstudy.models.monotone, test 1): flag
# a fixed effect whose remaining Newton step exceeds this times (1 + |beta|).  Not R's toler.inf
# (sqrt(1e-9) = 3.2e-5): the inner loop's sparse (approximate) information makes Newton-Raphson
# converge linearly, and on the R fixtures (tests/fixtures/frailty) the step left at
# convergence reaches 3.2e-6 (1 + |beta|), a tenth of R's tolerance; on a monotone likelihood it
# stays near one unit.  1e-3 sits 300 times above the first and 1000 times below the second.
FRAILTY_TOLER_INF = 1e-3


@dataclass
class FrailtyFit:
    """Result of :func:`frailty_cox_fit`; names follow R's coxph.penal object where one exists."""

    coef: np.ndarray  # (p,) fixed effects (NaN if singular)
    var: np.ndarray  # (p, p) R's fit$var = [H^-1]_beta  (se(coef))
    var2: np.ndarray  # (p, p) R's fit$var2 (se2)
    loglik: tuple[float, float]  # R's fit$loglik
    theta: float  # frailty variance of the reported fit (R prints it)
    theta_next: float  # R's fit$history[[1]]$theta (the next value the search would try)
    ilik: float  # I-likelihood (marginal loglik) of the reported fit, R's c.loglik
    history: pd.DataFrame  # per outer iteration: theta, loglik (penalised), ilik
    frail: np.ndarray  # (n_groups,) predicted log frailties (recentred: mean(exp) = 1)
    fvar: np.ndarray  # (n_groups,) their variances, diag([H^-1]_w)
    groups: np.ndarray  # group labels, in the order of `frail`
    df_frailty: float  # degrees of freedom of the frailty term
    df_columns: np.ndarray  # (p,) per covariate column, trace of var^-1 var2 (1 if unpenalised)
    frailty_chisq: float
    frailty_p: float
    penalty: tuple[float, float]  # R's fit$penalty
    outer_iterations: int
    newton_iterations: int  # R's fit$iter[2]: total over outer iterations
    converged: bool
    message: str
    n: int
    n_events: int
    method: str = "em"
    names: list[str] = field(default_factory=list)
    inner_failed: list[int] = field(
        default_factory=list
    )  # outer iterations whose inner loop ran out
    # Monotone likelihood (recurstudy.models.monotone): per fixed effect, the remaining Newton
    # step of the final inner fit exceeds toler.inf * (1 + |beta|) (R's agreg.fit test, applied
    # to the penalised fit; R's coxpenal.fit has none), and the covariate value every event has
    # when it is the covariate's lowest or highest with other values at risk (else NaN).
    infinite: np.ndarray | None = None
    no_event_level: np.ndarray | None = None

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.var))

    @property
    def se2(self) -> np.ndarray:
        return np.sqrt(np.diag(self.var2))


# --------------------------------------------------------------------------------------------
# Evaluation of the penalised partial likelihood, score and (sparse) information
# --------------------------------------------------------------------------------------------


class _FrailtyProblem:
    """Risk sets and partial likelihood (:mod:`recurstudy.models.risksets`) plus the frailty
    bookkeeping."""

    def __init__(self, xc, stop, event, start, group, n_groups, ties):
        n, p = xc.shape
        self.n, self.p, self.nf = n, p, n_groups
        self.rs = RiskSets(stop, event, start)
        self.base = PartialLikelihood(self.rs, xc, ties)
        b = self.base
        self.xc = b.xs  # the centred covariates, column-major
        self.group = group
        self.ev = self.rs.ev_pos
        self.g_ev = self.rs.ev_group
        self.grp_ev = group[self.ev]
        self.d_group = np.bincount(self.grp_ev, minlength=n_groups).astype(float)
        self.n_events = int(self.ev.size)
        self._find_pairs()

    def _find_pairs(self) -> None:
        """Pairs of rows of one group at risk at a common event time (none for derive's data)."""
        hl, hs = self.rs.hl, self.rs.hs
        live = np.flatnonzero(hl < hs)
        o = live[np.lexsort((hl[live], self.group[live]))]
        g, lo = self.group[o], hl[o]
        # Sorted by start within group: the rows overlapping row j are j + 1, ..., j + K_j (a
        # later row starts even later), so the overlaps at lag k are a subset of those at k - 1.
        first, second = [], []
        lag = 1
        while lag < o.size:
            ov = (g[lag:] == g[:-lag]) & (lo[lag:] < hs[o[:-lag]])
            if not ov.any():
                break
            idx = np.flatnonzero(ov)
            first.append(o[idx])
            second.append(o[idx + lag])
            lag += 1
        if first:
            self.pair_a = np.concatenate(first)
            self.pair_b = np.concatenate(second)
        else:
            self.pair_a = self.pair_b = np.zeros(0, dtype=np.int64)
        self.has_pairs = self.pair_a.size > 0
        if self.has_pairs:
            a, c = self.pair_a, self.pair_b
            self.pair_lo = np.maximum(hl[a], hl[c])
            self.pair_hi = np.minimum(hs[a], hs[c])
            ev = np.zeros(self.n, dtype=bool)
            ev[self.ev] = True
            gpos = hs - 1  # a row's own event group (meaningful for event rows)
            in_a = ev[a] & (gpos[a] >= self.pair_lo) & (gpos[a] < self.pair_hi)
            in_c = ev[c] & (gpos[c] >= self.pair_lo) & (gpos[c] < self.pair_hi)
            self.pair_ga = np.where(in_a, gpos[a], -1)
            self.pair_gc = np.where(in_c, gpos[c], -1)
            self.pair_both = in_a & in_c & (gpos[a] == gpos[c])

    def evaluate(self, beta: np.ndarray, w: np.ndarray, theta: float):
        """agfit5b's accumulation for one (beta, w) and the gamma penalty callback.

        Returns newlk (penalised), pl (unpenalised partial likelihood), u_w, u_b, fdiag (the
        frailty block of the information, penalty included), cross (p x nf), h22 (p x p), the
        recentred w, and the penalty's second derivative (R's coxlist1$second).
        """
        rs = self.rs
        p, nf = self.p, self.nf
        xc = self.xc
        ev, g_ev = self.ev, self.g_ev
        # The shared accumulation with the frailties as offset (bounded as R's coxsafe).
        pl, u_b, h22, terms = self.base.evaluate(beta, offset=w[self.group], bound=True)
        r, S1, D1, a0, a1, b0, b1, b2 = terms
        r_ev = r[ev]

        if theta == 0:
            # pfun's flag: the frailties are held at their values (0), their rows set to identity
            u_w = np.zeros(nf)
            fdiag = np.ones(nf)
            cross = np.zeros((p, nf))
            return pl, pl, u_w, u_b, fdiag, cross, h22, w, np.zeros(nf)

        # Frailty terms.  Per row: expected count and the pieces of the information.
        zero = np.zeros(1)
        hr = rs.row_sums(a0)  # cumulative hazard over the row's risk period
        erow = r * hr
        erow[ev] -= r_ev * a1[g_ev]
        e_grp = np.bincount(self.group, weights=erow, minlength=nf)
        u_w = self.d_group - e_grp
        qrow = r * r * rs.row_sums(b0)
        qrow[ev] -= r_ev * r_ev * (2.0 * b1[g_ev] - b2[g_ev])
        q_grp = np.bincount(self.group, weights=qrow, minlength=nf)
        if self.has_pairs:
            pa, pc = self.pair_a, self.pair_b
            B0 = np.concatenate([zero, np.cumsum(b0)])
            qp = B0[self.pair_hi] - B0[self.pair_lo]
            b1e = np.concatenate([b1, zero])  # index -1 -> 0
            qp -= b1e[self.pair_ga] + b1e[self.pair_gc]
            qp += np.where(self.pair_both, b2[np.maximum(self.pair_ga, 0)], 0.0)
            q_grp += np.bincount(self.group[pa], weights=2.0 * r[pa] * r[pc] * qp, minlength=nf)
        fdiag = e_grp - q_grp
        # cross information (covariate j, frailty i)
        dxh = S1 * b0[:, None] - D1 * b1[:, None]
        mh2 = S1 * b1[:, None] - D1 * b2[:, None]
        cross = np.empty((p, nf))
        a1_ev = a1[g_ev]
        for j in range(p):
            # x-weighted cumulative hazard over the row's risk period, one column at a time
            col = xc[:, j] * hr - rs.row_sums(dxh[:, j])
            col *= r
            col[ev] -= r_ev * (xc[ev, j] * a1_ev - mh2[g_ev, j])
            cross[j] = np.bincount(self.group, weights=col, minlength=nf)

        # frailty.gamma's pfun via R's callback: recentre, then the penalty's derivatives.
        rc = np.log(np.mean(np.exp(w)))
        c = w - rc
        nu = 1.0 / theta
        ec = np.exp(c)
        u_w = u_w - (ec - 1.0) * nu
        fdiag = fdiag + ec * nu
        newlk = pl + float(np.sum(c)) * nu
        return newlk, pl, u_w, u_b, fdiag, cross, h22, c, ec * nu


# --------------------------------------------------------------------------------------------
# R's cholesky3 / chsolve3 / chinv3: LDL' of [[diag(fd), C'], [C, H22]] with a diagonal block
# --------------------------------------------------------------------------------------------


@dataclass
class _Chol3:
    fd: np.ndarray  # frailty diagonal (unchanged by the factorisation, as in R)
    F: np.ndarray  # (p, nf) factor of the cross block (zero for singular frailty pivots)
    L: np.ndarray  # (p, p) lower triangle: unit factor below the diagonal, D on the diagonal
    rank: int


def _cholesky3(fd: np.ndarray, cross: np.ndarray, h22: np.ndarray, toler: float) -> _Chol3:
    p = h22.shape[0]
    eps = min(0.0, float(fd.min())) if fd.size else 0.0
    for i in range(p):
        if h22[i, i] > eps:
            eps = float(h22[i, i])
    eps = toler if eps == 0 else eps * toler
    nonneg = 1
    good = np.isfinite(fd) & ~(fd < eps)
    if np.any(~good & (fd < -8 * eps)):
        nonneg = -1
    rank = int(good.sum())
    piv = np.where(good, fd, 1.0)
    F = np.where(good[None, :], cross / piv[None, :], 0.0)
    L = np.tril(h22).astype(float, copy=True)
    L -= np.tril(F @ cross.T)  # sum_i C_ji C_ki / fd_i over good pivots
    for i in range(p):
        pivot = L[i, i]
        if not np.isfinite(pivot) or pivot < eps:
            L[i:, i] = 0.0
            if pivot < -8 * eps:
                nonneg = -1
        else:
            rank += 1
            for j in range(i + 1, p):
                temp = L[j, i] / pivot
                L[j, i] = temp
                L[j, j] -= temp * temp * pivot
                L[j + 1 :, j] -= temp * L[j + 1 :, i]
    return _Chol3(fd, F, L, rank * nonneg)


def _chsolve3(ch: _Chol3, u_w: np.ndarray, u_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = ch.L.shape[0]
    yb = u_b.astype(float, copy=True)
    for i in range(p):
        yb[i] -= float(u_w @ ch.F[i]) + float(yb[:i] @ ch.L[i, :i])
    for i in range(p - 1, -1, -1):
        if ch.L[i, i] == 0:
            yb[i] = 0.0
        else:
            yb[i] = yb[i] / ch.L[i, i] - float(yb[i + 1 :] @ ch.L[i + 1 :, i])
    with np.errstate(divide="ignore", invalid="ignore"):
        yw = np.where(ch.fd == 0, 0.0, u_w / ch.fd - ch.F.T @ yb)
    return yw, yb


def _chinv3(ch: _Chol3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """R's chinv3 and agfit5b's "nicer output": returns (fdinv_w, Tc, Linv, dinv_b).

    Tc = [F^-1]_(beta, w), Linv = [F^-1]_(beta, beta) (unit lower triangular), and the inverted
    pivots: 1/fd (fd itself where fd <= 0) and 1/D (0 for singular columns).
    """
    p, nf = ch.F.shape
    fd = ch.fd
    pos = fd > 0
    with np.errstate(divide="ignore"):
        fdinv = np.where(pos, 1.0 / np.where(pos, fd, 1.0), fd)
    M = np.concatenate([np.where(pos[None, :], -ch.F, ch.F), ch.L.copy()], axis=1)
    for i in range(p):
        ii = i + nf
        if M[i, ii] > 0:
            M[i, ii] = 1.0 / M[i, ii]
            for j in range(i + 1, p):
                M[j, ii] = -M[j, ii]
                M[j, :ii] += M[j, ii] * M[i, :ii]
    dinv = np.array([M[i, i + nf] for i in range(p)])
    Tc = M[:, :nf].copy()
    Linv = np.tril(M[:, nf:], -1) + np.eye(p)
    return fdinv, Tc, Linv, dinv


# --------------------------------------------------------------------------------------------
# Inner loop (agfit5b) and outer loop (coxpenal.fit with frailty.controlgam)
# --------------------------------------------------------------------------------------------


@dataclass
class _Inner:
    beta: np.ndarray
    w: np.ndarray
    newlk: float
    pl: float
    iters: int
    converged: bool
    ch: _Chol3
    pen2: np.ndarray
    u_w: np.ndarray  # score at the final point (frailties, fixed effects), penalty included
    u_b: np.ndarray


def _inner(prob: _FrailtyProblem, beta, w, theta, maxiter, eps, toler) -> _Inner:
    beta = np.array(beta, dtype=float, copy=True)
    w = np.array(w, dtype=float, copy=True)
    oldbeta, oldw = beta.copy(), w.copy()
    loglik = 0.0
    halving = False
    converged = False
    it = 0
    for it in range(maxiter + 1):
        newlk, pl, u_w, u_b, fd, cross, h22, w, pen2 = prob.evaluate(beta, w, theta)
        ch = _cholesky3(fd, cross, h22, toler)
        with np.errstate(divide="ignore", invalid="ignore"):
            close = abs(1.0 - loglik / newlk) <= eps
        if close and not halving:
            converged = True
            break
        if it == maxiter:
            it = maxiter
            break
        if it > 0 and newlk < loglik:
            halving = True
            beta = (oldbeta + beta) / 2.0
            w = (oldw + w) / 2.0
        else:
            halving = False
            loglik = newlk
            sw, sb = _chsolve3(ch, u_w, u_b)
            oldbeta, oldw = beta.copy(), w.copy()
            beta = beta + sb
            w = w + sw
    return _Inner(beta, w, newlk, pl, it, converged, ch, pen2, u_w, u_b)


def gammacon(d: np.ndarray, nu: float) -> float:
    """R's frailty.gammacon(d, nu): the I-likelihood correction for a gamma frailty."""
    d = np.asarray(d, dtype=float)
    maxd = float(d.max())
    if nu > 1e7 * maxd:
        term1 = float(np.sum(d * d)) / nu
    else:
        term1 = float(np.sum(d + nu * np.log(nu / (nu + d))))
    # term2 = sum_i [sum_{k=1}^{d_i} log(nu + k - 1) - d_i log(nu + d_i)], as R's table sums
    dd = d[d > 0].astype(np.int64)
    if dd.size == 0:
        return term1
    md = int(dd.max())
    tbl = np.bincount(dd, minlength=md + 1)[1:]  # groups with d == l, l = 1..maxd
    ctbl = np.cumsum(tbl[::-1])[::-1]  # groups with d >= l
    lev = np.arange(1, md + 1)
    num = np.repeat(nu + lev - 1.0, ctbl)
    den = np.repeat(nu + lev.astype(float), tbl * lev)
    return term1 + float(np.sum(np.log(num / den)))


class _Surrender(Exception):
    """frailty.brent's stop("Ties for max(y), I surrender")."""


def _brent(x: np.ndarray, y: np.ndarray, lower: float | None = None) -> float:
    """R's frailty.brent (one step of a safeguarded parabolic search for the maximum)."""
    n = x.size
    if n < 3:
        return float(np.mean(x))
    ord_ = np.argsort(x, kind="stable")
    xx, yy = x[ord_], y[ord_]
    at_max = np.flatnonzero(yy == y.max())
    if at_max.size > 1:
        raise _Surrender("Ties for max(y), I surrender")
    best = int(at_max[0])
    if best == 0:
        new = xx[0] - 3 * (xx[1] - xx[0])
        if lower is not None and new < lower:
            new = lower + (xx[xx > lower].min() - lower) / 10
        return float(new)
    if best == n - 1:
        return float(xx[-1] + 3 * (xx[-1] - xx[-2]))
    xx = xx[best - 1 : best + 2]
    yy = yy[best - 1 : best + 2]
    t1 = (xx[1] - xx[0]) ** 2 * (yy[1] - yy[2]) - (xx[1] - xx[2]) ** 2 * (yy[1] - yy[0])
    t2 = (xx[1] - xx[0]) * (yy[1] - yy[2]) - (xx[1] - xx[2]) * (yy[1] - yy[0])
    new = xx[1] - 0.5 * t1 / t2
    if new < xx[0] or new > xx[2] or (n > 4 and (new - x[n - 1]) > 0.5 * abs(x[n - 2] - x[n - 3])):
        if (xx[1] - xx[0]) > (xx[2] - xx[1]):
            return float(xx[1] - 0.38 * (xx[1] - xx[0]))
        return float(xx[1] + 0.32 * (xx[2] - xx[1]))
    return float(new)


def _controlgam(it: int, hist: list[tuple[float, float, float]], eps: float):
    """frailty.controlgam for iter >= 1 given the history so far: (next theta, done)."""
    x = np.array([h[0] for h in hist])
    y = np.array([h[2] for h in hist])
    if it == 1:
        return 1.0, False
    if it == 2:
        return (float(np.mean(x[:2])) if y[1] < y[0] + 1 else 2 * x[1]), False
    done = abs(1 - y[it - 1] / y[it - 2]) < eps
    if y[it - 1] == y.max() and x[it - 1] == x.max():
        new = 2 * float(x.max())
    else:
        new = _brent(np.sqrt(x), y, lower=0.0) ** 2
    return new, bool(done)


def frailty_cox_fit(
    X,
    start,
    stop,
    event,
    group,
    *,
    ties: str = "efron",
    theta: float | None = None,
    eps_outer: float = 1e-5,
    eps: float = 1e-9,
    iter_max: int = 20,
    outer_max: int = 10,
    toler_chol: float = _TOLER_CHOL,
    toler_inf: float = FRAILTY_TOLER_INF,
    names: Sequence[str] | None = None,
    terms: dict[str, list[int]] | None = None,
) -> FrailtyFit:
    """Fit ``coxph(Surv(start, stop, event) ~ X + frailty(group))`` as R does.

    ``theta`` None chooses the frailty variance as R's default ``method = "em"``; a number fixes
    it (R: ``frailty(group, theta = ...)``).  ``terms`` groups covariate columns into formula
    terms for the degrees of freedom (default: one term per column).  Problems with the data or
    the fit are reported in ``message`` (``converged`` False); malformed input raises ValueError.
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    Xa = np.asarray(X, dtype=float)
    if Xa.ndim == 1:
        Xa = Xa[:, None]
    n, p = Xa.shape
    names = list(names) if names is not None else [f"x{j + 1}" for j in range(p)]
    start_a = np.asarray(start, dtype=float).reshape(-1)
    stop_a = np.asarray(stop, dtype=float).reshape(-1)
    ev_a = np.asarray(event, dtype=float).reshape(-1)
    g_raw = np.asarray(group).reshape(-1)
    if not (start_a.size == stop_a.size == ev_a.size == g_raw.size == n):
        raise ValueError("X, start, stop, event and group must have the same number of rows")
    if not (
        np.all(np.isfinite(Xa)) and np.all(np.isfinite(start_a)) and np.all(np.isfinite(stop_a))
    ):
        raise ValueError("X, start and stop must be finite")
    if not np.all(np.isin(ev_a, (0.0, 1.0))):
        raise ValueError("event must contain only 0/1 values")
    if np.any(stop_a <= start_a):
        raise ValueError("intervals must satisfy start < stop")
    groups, gcode = np.unique(g_raw, return_inverse=True)
    gcode = gcode.astype(np.int64).reshape(-1)
    nf = groups.size
    event_a = ev_a == 1.0
    method = "em" if theta is None else "fixed"

    def empty(message: str) -> FrailtyFit:
        nan_p = np.full(p, np.nan)
        return FrailtyFit(
            coef=nan_p,
            var=np.full((p, p), np.nan),
            var2=np.full((p, p), np.nan),
            loglik=(np.nan, np.nan),
            theta=np.nan,
            theta_next=np.nan,
            ilik=np.nan,
            history=pd.DataFrame(columns=["theta", "loglik", "ilik"]),
            frail=np.full(nf, np.nan),
            fvar=np.full(nf, np.nan),
            groups=groups,
            df_frailty=np.nan,
            df_columns=np.full(p, np.nan),
            frailty_chisq=np.nan,
            frailty_p=np.nan,
            penalty=(np.nan, np.nan),
            outer_iterations=0,
            newton_iterations=0,
            converged=False,
            message=message,
            n=n,
            n_events=int(event_a.sum()),
            method=method,
            names=names,
        )

    if n == 0 or not event_a.any():
        return empty("no events: cannot fit a Cox model")
    if nf <= 5:
        return empty(
            f"{nf} frailty groups: R fits a non-sparse frailty term for 5 or fewer groups "
            "(not implemented)"
        )
    if theta is not None and not (np.isfinite(theta) and theta > 0):
        return empty(f"fixed theta must be positive, got {theta}")

    xc = Xa - Xa.mean(axis=0)
    prob = _FrailtyProblem(xc, stop_a, event_a, start_a, gcode, nf, ties)
    d_group = prob.d_group
    loglik0 = prob.evaluate(np.zeros(p), np.zeros(nf), 0.0)[1]

    def correct(th: float) -> float:
        return 0.0 if th == 0 else gammacon(d_group, 1.0 / th)

    hist: list[tuple[float, float, float]] = []
    th = 0.0 if theta is None else float(theta)
    init_b, init_w = np.zeros(p), np.zeros(nf)
    thetasave = [th]
    coefsave: list[np.ndarray] = []
    fsave: list[np.ndarray] = []
    total_iter = 0
    inner_failed: list[int] = []
    penalty0 = 0.0
    done = False
    outer = 0
    res = None
    theta_next = th
    message = []
    for outer in range(1, outer_max + 1):
        res = _inner(prob, init_b, init_w, th, iter_max, eps, toler_chol)
        total_iter += res.iters
        if res.iters >= iter_max:
            inner_failed.append(outer)
        penalty = 0.0 if th == 0 else -float(np.sum(res.w)) / th
        if outer == 1:
            penalty0 = penalty
        ilik = res.newlk + correct(th)
        if theta is not None:
            hist.append((th, res.newlk, ilik))
            theta_next, done = th, True
            break
        hist.append((th, res.newlk, ilik))
        try:
            theta_next, done = _controlgam(outer, hist, eps_outer)
        except _Surrender as exc:
            message.append(f"theta search stopped: {exc} (R stops with this error)")
            theta_next, done = th, False
            break
        if done:
            break
        if outer == 1:
            coefsave, fsave = [res.beta.copy()], [res.w.copy()]
            init_b, init_w = res.beta.copy(), res.w.copy()
        else:
            coefsave.append(res.beta.copy())
            fsave.append(res.w.copy())
            howclose = (np.array(thetasave) - theta_next) ** 2
            which = int(np.flatnonzero(howclose == howclose.min())[0])
            init_b, init_w = coefsave[which].copy(), fsave[which].copy()
        thetasave.append(theta_next)
        th = theta_next

    assert res is not None
    ch = res.ch
    fdinv, Tc, Linv, dinv = _chinv3(ch)
    if th == 0:
        fdinv = np.zeros(nf)
    C = Linv.T @ (dinv[:, None] * Linv)
    B = Tc.T @ (dinv[:, None] * Linv)
    pen1 = res.pen2
    var2 = C - B.T @ (pen1[:, None] * B)
    adiag = fdinv + np.sum(Tc * Tc * dinv[:, None], axis=0)
    df_frail = nf - float(np.sum(adiag * pen1))
    sing = dinv == 0
    coef = res.beta.copy()
    coef[sing] = np.nan
    for m in (C, var2):  # R leaves zeros there; NaN says "not estimated"
        m[sing, :] = np.nan
        m[:, sing] = np.nan
    df_cols = np.full(p, np.nan)
    for cols in (terms or {nm: [j] for j, nm in enumerate(names)}).values():
        cols = [c for c in cols if not sing[c]]
        if not cols:
            continue
        cj = C[np.ix_(cols, cols)]
        vj = var2[np.ix_(cols, cols)]
        if len(cols) == 1:
            val = float(vj[0, 0] / cj[0, 0])
        else:
            m, _ = _cholesky2(cj, _WTEST_TOLER)
            sol = np.column_stack([_chsolve2(m, vj[:, k]) for k in range(len(cols))])
            val = float(np.trace(sol))
        df_cols[cols[0]] = val
        for c in cols[1:]:
            df_cols[c] = 0.0  # the term's df is carried by its first column
    frail = res.w
    with np.errstate(divide="ignore", invalid="ignore"):
        chisq = float(np.sum(frail**2 / adiag)) if th > 0 else 0.0
    pval = float(stats.chi2.sf(chisq, max(df_frail, 0.5)))
    pl_final = res.newlk + (0.0 if th == 0 else -float(np.sum(frail)) / th)

    # Monotone likelihood in a fixed effect (recurstudy.models.monotone): the structural test,
    # and R's agreg.fit test on the Newton step the final inner fit would still take.
    no_event = no_event_levels(Xa, prob.rs)  # on the covariates' own scale
    _, step_b = _chsolve3(ch, res.u_w, res.u_b)
    infinite = ~sing & (
        ~np.isfinite(res.u_b) | (np.abs(step_b) > toler_inf * (1.0 + np.abs(res.beta)))
    )

    converged = bool(done)
    if inner_failed:
        message.append(
            "inner Newton-Raphson loop did not converge in outer iteration(s) "
            + ", ".join(map(str, inner_failed))
        )
        converged = False
    if not done and not message:
        message.append(f"theta search did not converge in {outer_max} outer iterations")
    if sing.any():
        message.append(
            "X matrix deemed singular; coefficient set to NaN: " + ", ".join(np.array(names)[sing])
        )
        converged = False
    if not np.all(np.isfinite(coef[~sing])) or not np.isfinite(res.newlk):
        message.append("numeric overflow in the fit")
        converged = False

    return FrailtyFit(
        coef=coef,
        var=C,
        var2=var2,
        loglik=(float(loglik0), float(pl_final)),
        theta=float(th),
        theta_next=float(theta_next),
        ilik=float(hist[-1][2]),
        history=pd.DataFrame(hist, columns=["theta", "loglik", "ilik"]),
        frail=frail,
        fvar=adiag,
        groups=groups,
        df_frailty=df_frail,
        df_columns=df_cols,
        frailty_chisq=chisq,
        frailty_p=pval,
        penalty=(penalty0, -float(np.sum(frail)) / th if th > 0 else 0.0),
        outer_iterations=outer,
        newton_iterations=total_iter,
        converged=converged,
        message="; ".join(message),
        n=n,
        n_events=int(event_a.sum()),
        method=method,
        names=names,
        inner_failed=inner_failed,
        infinite=infinite,
        no_event_level=no_event,
    )


# --------------------------------------------------------------------------------------------
# The registered model
# --------------------------------------------------------------------------------------------


def _term_columns(formula: str, rows: pd.DataFrame, names: list[str]) -> dict[str, list[int]]:
    """Covariate columns grouped by formula term (R's assign), for the degrees of freedom."""
    from formulaic import model_matrix

    mm = model_matrix(formula.split("~", 1)[-1].strip() or "1", rows, na_action="drop")
    terms: dict[str, list[int]] = {}
    for term, sl in mm.model_spec.term_slices.items():
        cols = [names.index(c) for c in list(mm.columns)[sl] if c in names]
        if cols:
            terms[names[cols[0]] if len(cols) == 1 else str(term)] = cols
    return terms


def _boundary(fit: FrailtyFit) -> bool:
    """theta at its lower boundary: the I-likelihood is largest at theta = 0 (em search only)."""
    h = fit.history
    return fit.method == "em" and len(h) > 1 and float(h["ilik"].iloc[0]) >= float(h["ilik"].max())


@dataclass(frozen=True)
class FrailtyOptions:
    """Options of the shared gamma-frailty Cox model (R's frailty.gamma and coxph.control)."""

    ties: Literal["efron", "breslow"] = option("efron", doc="tie handling")
    theta: float | None = option(
        None, minimum=0.0, exclusive_minimum=True, doc="fix the frailty variance"
    )
    eps_outer: float = option(1e-5, minimum=0.0, exclusive_minimum=True, doc="outer tolerance")
    outer_max: int = option(10, minimum=1, doc="outer (theta) iterations")
    iter_max: int = option(20, minimum=1, doc="inner Newton iterations")


@register
class FrailtyCox(Model):
    """Andersen-Gill intensity with a shared gamma frailty per participant, as R's
    ``coxph(Surv(start, stop, event) ~ arm + frailty(participant_id))`` (frailty.gamma, method
    "em": theta maximises the I-likelihood).  Standard errors are R's se(coef) (``fit$var``);
    se2 (``fit$var2``) is in the ``se2`` extra.  ``log_likelihood`` is R's ``fit$loglik[2]``: the
    partial likelihood at the fit with the frailties as offsets, without the penalty; the
    I-likelihood (marginal) is in the ``frailty`` extra.

    Options: ``ties`` (efron | breslow), ``theta`` (fix the frailty variance: R's
    ``frailty(id, theta = ...)``), ``eps_outer`` (1e-5), ``outer_max`` (10), ``iter_max`` (20).
    """

    kind: ClassVar[str] = "frailty_cox"
    datasets: ClassVar[tuple[str, ...]] = ("counting_process",)
    Options: ClassVar[type] = FrailtyOptions
    group: ClassVar[str] = "conditional"
    title: ClassVar[str] = "Shared gamma-frailty Cox (all episodes)"
    effect_measure: ClassVar[str | None] = "hazard ratio"
    estimand: ClassVar[str] = (
        "ratio of the episode intensities, intervention vs control, for the same participant "
        "(conditional on the shared gamma frailty); model-based errors"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = (
        ExtraTable("frailty", "Frailty variance (theta) and I-likelihood"),
        ExtraTable("se2", "Alternative standard errors (R's se2)", "appendix"),
        ExtraTable("history", "Theta search history", "appendix"),
        ExtraTable("frailty_summary", "Distribution of the estimated frailties", "appendix"),
    )
    claim_metrics: ClassVar[tuple[str, ...]] = ("hazard_reduction",)
    reference: ClassVar[str] = "Therneau, Grambsch and Pankratz (2003)"
    r_call: ClassVar[str] = (
        "coxph(Surv(start, stop, event) ~ arm + frailty(participant_id, distribution = 'gamma'))"
    )

    def fit(self, spec: ModelSpec, *, counting_process: pd.DataFrame) -> ModelResult:
        df = counting_process
        counts = {"n_participants": int(df[ID].nunique()), "n_events": int(df["event"].sum())}
        present = set(df["arm"].dropna().astype(str).unique())
        if len(present) < 2:
            raise NotEstimable(
                f"only one arm in the data ({', '.join(sorted(present)) or 'none'})", **counts
            )
        if counts["n_events"] == 0:
            raise NotEstimable("no events: cannot fit a Cox model", **counts)
        X, names = design(spec.formula, df, intercept=False)
        rows = df.loc[X.index]
        counts = {"n_participants": int(rows[ID].nunique()), "n_events": int(rows["event"].sum())}
        opts = spec.options
        ties = opts.get("ties", "efron")
        theta = opts.get("theta")
        fit = frailty_cox_fit(
            X.to_numpy(),
            rows["start"].to_numpy(dtype=float),
            rows["stop"].to_numpy(dtype=float),
            rows["event"].to_numpy(),
            rows[ID].to_numpy(),
            ties=ties,
            theta=None if theta is None else float(theta),
            eps_outer=float(opts.get("eps_outer", 1e-5)),
            outer_max=int(opts.get("outer_max", 10)),
            iter_max=int(opts.get("iter_max", 20)),
            names=names,
            terms=_term_columns(spec.formula, rows, names),
        )
        if not np.isfinite(fit.theta):
            raise NotEstimable(fit.message, **counts)
        # A fixed effect running off to infinity (e.g. no episodes in one arm): the failed row.
        raise_if_monotone(
            spec, names, fit.infinite, fit.no_event_level, counts, X.to_numpy(), r_name=None
        )
        messages = [fit.message] if fit.message else []
        converged = fit.converged
        if _boundary(fit):
            converged = False
            messages.append(
                f"theta at the boundary: the I-likelihood is largest at theta = 0 (no detectable "
                f"frailty; the search stopped at theta = {fit.theta:.3g}, and the estimates are "
                "those of the Andersen-Gill fit)"
            )
        dropped = len(df) - len(rows)
        if dropped:
            messages.append(f"{dropped} rows with missing covariates")
        message = "; ".join(messages)
        table = tidy(
            spec,
            names,
            fit.coef,
            fit.se,
            robust=False,
            log_likelihood=fit.loglik[1],
            converged=converged,
            message=message,
            **counts,
        )
        return ModelResult(table, _extras(fit, names), converged=converged, message=message)


def _extras(fit: FrailtyFit, names: list[str]) -> dict[str, pd.DataFrame]:
    lr = 2.0 * (fit.loglik[1] - fit.loglik[0])
    lr_df = float(np.nansum(fit.df_columns)) + fit.df_frailty
    h = fit.history
    # Likelihood-ratio test of theta = 0 on the I-likelihood (not printed by R): theta = 0 is on
    # the boundary, so the reference is the 50:50 mixture of chi-square(0) and chi-square(1).
    ilik_lr = 2.0 * (fit.ilik - float(h["ilik"].iloc[0])) if fit.method == "em" else np.nan
    ilik_p = 0.5 * stats.chi2.sf(max(ilik_lr, 0.0), 1) if np.isfinite(ilik_lr) else np.nan
    method = (
        "em: maximise the I-likelihood (R frailty.gamma default)" if fit.method == "em" else "fixed"
    )
    quantities = [
        ("theta", fit.theta),
        ("theta_method", method),
        ("theta_next", fit.theta_next),
        ("i_likelihood", fit.ilik),
        ("penalised_loglik", float(h["loglik"].iloc[-1])),
        ("loglik_null", fit.loglik[0]),
        ("loglik", fit.loglik[1]),
        ("outer_iterations", fit.outer_iterations),
        ("newton_iterations", fit.newton_iterations),
        ("frailty_wald_chisq", fit.frailty_chisq),
        ("frailty_df", fit.df_frailty),
        ("frailty_p_value", fit.frailty_p),
        ("lr_statistic", lr),
        ("lr_df", lr_df),
        ("lr_p_value", float(stats.chi2.sf(lr, lr_df)) if lr_df > 0 else np.nan),
        ("theta_lr_statistic", ilik_lr),
        ("theta_lr_p_value", ilik_p),
        ("n_groups", int(fit.frail.size)),
        ("n_rows", fit.n),
    ]
    frailty = pd.DataFrame(quantities, columns=["quantity", "value"])
    se2 = pd.DataFrame(
        {
            "term": names,
            "estimate": fit.coef,
            "std_error": fit.se,
            "se2": fit.se2,
            "df": fit.df_columns,
        }
    )
    probs = [0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95]
    w = fit.frail
    summary = pd.DataFrame(
        {
            "statistic": [f"q{int(round(q * 100)):02d}" for q in probs] + ["mean", "sd"],
            "log_frailty": [*np.quantile(w, probs), float(np.mean(w)), float(np.std(w, ddof=1))],
            "frailty": [
                *np.quantile(np.exp(w), probs),
                float(np.mean(np.exp(w))),
                float(np.std(np.exp(w), ddof=1)),
            ],
        }
    )
    return {
        "frailty": frailty,
        "history": h.rename_axis("outer").reset_index().assign(outer=lambda d: d["outer"] + 1),
        "se2": se2,
        "frailty_summary": summary,
    }
