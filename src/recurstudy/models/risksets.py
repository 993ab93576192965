"""Risk sets of counting-process data and the Cox partial-likelihood sums built on them.

One implementation of the risk-set arithmetic shared by the Cox engine
(:mod:`recurstudy.models.coxph_engine`), the gamma-frailty Cox model
(:mod:`recurstudy.models.frailty`), R's ``cox.zph`` (:mod:`recurstudy.models.coxzph`) and the
mean cumulative function (:func:`recurstudy.models.survival.mean_cumulative_function`).

Why it is written by hand: lifelines' cluster-robust variance ignores entry times (its score
residuals treat every row as at risk from time 0) and loops row by row, quadratic in the rows;
statsmodels' ``PHReg(entry=...)`` counts a row as at risk at its own entry time, a different
risk-set convention from R's, so back-to-back intervals give other coefficients.  Neither takes
case weights and offsets together with (start, stop] data the way R's ``coxph`` does.

Conventions (R's survival package, ``agfit4`` / ``agscore3``)
-------------------------------------------------------------
* A row is at risk at an event time t of its stratum when ``start < t <= stop``: a row entering
  at t is *not* at risk at t, a row leaving at t is.  ``start=None`` means right-censored data
  (at risk from -inf).
* Event groups are the distinct (stratum, event time) pairs, numbered 0..E-1 in (stratum, time)
  order.  Row i is at risk exactly for the groups ``hl[i] <= g < hs[i]``, and an event row's own
  group is ``hs[i] - 1``.
* Case weights w_i multiply a row's contribution to every risk-set sum and every event sum.
  Efron ties with weights as R: a group with d tied events of total weight W gives d terms
  k = 0..d-1, each of weight W / d, with denominator S0 - (k/d) D0, where S0 sums w exp(eta)
  over the risk set and D0 over the tied events.  Breslow: one term of weight W.
  Integer weights equal duplicated rows with Breslow ties; with Efron ties only where the
  weighted rows are not events (the correction counts tied events, not their weight, as R's).
* Offsets are added to the linear predictor: eta = x beta + offset.
* Residuals (score, Schoenfeld, martingale) are per row and *unweighted*, as R's
  ``residuals.coxph(weighted = FALSE)``; a robust variance multiplies the score residuals by the
  weights before summing them within clusters (:func:`recurstudy.models.variance.sandwich`).

API
---
``RiskSets(stop, event, start=None, strata=None, weights=None, n_strata=None)``
    Built once per data set (O(n log n), no loop over rows or event times).  Attributes: ``n``,
    ``ngroups`` (E), ``n_strata``, ``hl`` / ``hs`` (at-risk group range per row), ``ev_pos``
    (row index of each event), ``ev_group`` (its group), ``group_time``, ``group_stratum``,
    ``d`` (events per group), ``dw`` (event weight per group; ``d`` without weights),
    ``weights`` (None if unweighted), ``strata`` (codes 0..n_strata-1).  Methods:

    * ``risk_sums(v)``: sum of w_i v_i over the risk set of each group, (E,) or (E, k).
    * ``event_sums(v)``: sum of w_i v_i over the events of each group.
    * ``n_at_risk()``: unweighted number of rows at risk per group (int64).
    * ``row_sums(per_group)``: for each row, the sum of ``per_group`` over its at-risk groups
      (cumulative hazards, expected counts), (n,) or (n, k).
    * ``ties(method)``: the :class:`Ties` terms ("efron" or "breslow").
    * ``shift(eta)``: per-row max of eta in the row's stratum (keeps exp() in range).

``PartialLikelihood(risksets, x, ties="efron")``
    The Cox partial likelihood of covariates ``x`` (n, p) on those risk sets.

    * ``evaluate(beta, offset=None, bound=False)`` -> ``(loglik, score, information, terms)``,
      weights and offsets included; ``bound`` clips eta to [-200, 22] as R's ``coxsafe`` (agfit5,
      the penalised fits).  ``terms`` (:class:`CoxTerms`) carries the risk-set sums needed for
      residuals and hazards at that beta.
    * ``moments(eta)`` -> :class:`Moments`: S0, S1, S2 (risk-set sums of w r, w r x, w r x x')
      and D0, D1, D2 (the same over the tied events), r = exp(eta - shift).
    * ``score_residuals(terms)`` (n, p): R's ``residuals(fit, type = "score")`` (agscore3).
    * ``schoenfeld_residuals(terms)`` (events, p): R's type "schoenfeld" (Efron: the tied events'
      mean is the average of the d Efron means).
    * ``martingale_residuals(terms)`` (n,): event - expected count (Efron share for ties).
    * ``hazard(terms)`` (E,): the baseline hazard increments at the groups' times for the linear
      predictor evaluated (Breslow or Efron estimator with the case weights).

Everything is vectorised: risk-set sums are reverse cumulative sums over event groups of
``bincount`` net flows (rows leaving minus rows entering), so partial sums stay at the size of
the risk set; Efron terms are per-term scalars reduced per group; per-row sums over at-risk groups
are differences of cumulative sums at ``hs`` and ``hl``.  The only Python loops are over
covariates or covariate pairs.

For the work that builds on this: IPCW Andersen-Gill passes time-fixed IPCW weights per row as
``weights`` (time-varying weights: split the rows at the weight's change points first); Ghosh-Lin
proportional means uses ``risk_sums`` / ``event_sums`` for its weighted Breslow-type estimating
equation and ``row_sums`` for the weighted cumulative hazard; a joint frailty model adds the
frailty as ``offset`` (``bound=True``) and uses ``row_sums`` of ``terms.a0`` for expected counts,
as :mod:`recurstudy.models.frailty` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "CoxTerms",
    "Moments",
    "PartialLikelihood",
    "RiskSets",
    "Ties",
    "strata_codes",
]


def strata_codes(labels) -> tuple[np.ndarray, int]:
    """Integer codes 0..k-1 of stratum (or cluster) labels in sorted label order, and k.

    Text labels (participant ids as clusters) are hashed with pandas' factorize and only the
    distinct labels sorted: the same codes as ``np.unique(..., return_inverse=True)``, which
    sorts every row's string (8 s of an Andersen-Gill fit on 3.6M intervals, profiled).
    """
    a = np.asarray(labels).reshape(-1)
    if a.dtype.kind in "iu" and a.size and a.min() >= 0 and a.max() < 2 * a.size + 1024:
        # Integer labels (codes from pd.factorize): ranks of the distinct values in O(n), the
        # same codes as np.unique's inverse without sorting every row.
        present = np.bincount(a) > 0
        rank = np.cumsum(present) - 1
        return rank[a].astype(np.int64), int(present.sum())
    if a.dtype.kind == "O":
        codes, uniq = pd.factorize(a, sort=True)
        if not (codes < 0).any():  # missing labels: np.unique's behaviour below
            return codes.astype(np.int64), int(len(uniq))
    uniq, inv = np.unique(a, return_inverse=True)
    return inv.astype(np.int64).reshape(-1), int(uniq.shape[0])


def _rank_right(sorted_vals: np.ndarray, t: np.ndarray) -> np.ndarray:
    """np.searchsorted(sorted_vals, t, side="right"), via a lookup table for integer times."""
    if sorted_vals.size == 0:
        return np.zeros(t.shape[0], dtype=np.int64)
    fin = np.isfinite(t)
    if fin.all():
        lo, hi = float(t.min()), float(t.max())
        if hi - lo <= max(4 * t.size, 1 << 20) and np.array_equal(t, np.floor(t)):
            grid = np.arange(lo, hi + 1.0)
            table = np.searchsorted(sorted_vals, grid, side="right")
            return table[(t - lo).astype(np.int64)]
    return np.searchsorted(sorted_vals, t, side="right").astype(np.int64)


@dataclass(frozen=True)
class Ties:
    """The terms of the tie handling: one per tied event (Efron) or one per group (Breslow)."""

    method: str
    group: np.ndarray  # (T,) event group of each term
    gstart: np.ndarray  # (E,) index of each group's first term
    frac: np.ndarray  # (T,) Efron fraction k/d of the tied events removed (0 for Breslow)
    weight: np.ndarray  # (T,) weight of the term (mean event weight, or total for Breslow)


class RiskSets:
    """Event groups and at-risk ranges of (start, stop] rows, with optional case weights.

    ``strata``: labels, or integer codes 0..n_strata-1 (every code present) when ``n_strata`` is
    given.  ``weights``: finite, >= 0 (R's coxph requires > 0; its callers check).  Input
    checking here is minimal (shapes, weights); the model functions validate their data.
    """

    def __init__(self, stop, event, start=None, strata=None, weights=None, n_strata=None):
        stop = np.asarray(stop, dtype=float).reshape(-1)
        n = stop.shape[0]
        event = np.asarray(event).reshape(-1).astype(bool)
        if event.shape[0] != n:
            raise ValueError("stop and event have different lengths")
        if start is not None:
            start = np.asarray(start, dtype=float).reshape(-1)
            if start.shape[0] != n:
                raise ValueError("stop and start have different lengths")
        if strata is None:
            strata_code, n_strata = np.zeros(n, dtype=np.int64), 1
        elif n_strata is None:
            strata_code, n_strata = strata_codes(strata)
        else:
            strata_code = np.asarray(strata, dtype=np.int64).reshape(-1)
        if strata_code.shape[0] != n:
            raise ValueError("stop and strata have different lengths")
        if weights is not None:
            weights = np.asarray(weights, dtype=float).reshape(-1)
            if weights.shape[0] != n:
                raise ValueError("stop and weights have different lengths")
            if not np.all(np.isfinite(weights)) or np.any(weights < 0):
                raise ValueError("weights must be finite and >= 0")
        self.n = n
        self.weights = weights
        self.strata = strata_code
        self.n_strata = int(n_strata)
        self.ev_pos = np.flatnonzero(event)
        # Rank every time among the distinct event times (over all strata).
        uet = np.unique(stop[self.ev_pos])
        big = np.int64(uet.size + 1)
        key_stop = strata_code * big + _rank_right(uet, stop)
        if start is None:
            key_start = strata_code * big
        else:
            key_start = strata_code * big + _rank_right(uet, start)
        if n_strata == 1:
            gkeys = np.arange(1, big, dtype=np.int64)  # every distinct event time is a group
        else:
            gkeys = np.unique(key_stop[self.ev_pos])
        self.ngroups = E = gkeys.size
        n_keys = int(n_strata * big)
        if n_keys <= max(4 * n, 1 << 20):
            # Lookup table over the (small) composite key space instead of binary searches.
            table = np.searchsorted(gkeys, np.arange(n_keys, dtype=np.int64), side="right")
            self.hs = table[key_stop]
            self.hl = table[key_start]
        else:
            self.hs = np.searchsorted(gkeys, key_stop, side="right")
            self.hl = np.searchsorted(gkeys, key_start, side="right")
        self.group_stratum = gkeys // big
        self.group_time = uet[gkeys % big - 1] if E else np.zeros(0)
        self.ev_group = self.hs[self.ev_pos] - 1
        self.d = np.bincount(self.ev_group, minlength=E).astype(float)
        if weights is None:
            self.w_ev = None
            self.dw = self.d
        else:
            self.w_ev = weights[self.ev_pos]
            self.dw = np.bincount(self.ev_group, weights=self.w_ev, minlength=E)
        # Rows at risk at no event time (R's "ignore") contribute nothing to the sums.
        used = self.hl < self.hs
        self.use_all = bool(used.all())
        self.used = None if self.use_all else np.flatnonzero(used)
        self.hs_u = self.hs if self.use_all else self.hs[self.used]
        self.hl_u = self.hl if self.use_all else self.hl[self.used]
        if weights is None:
            self.w_u = None
        else:
            self.w_u = weights if self.use_all else weights[self.used]
        if n_strata > 1:
            self.s_order = np.argsort(strata_code, kind="stable")
            self.s_starts = np.searchsorted(strata_code[self.s_order], np.arange(n_strata))

    # ---- sums over risk sets and events -------------------------------------------------------

    def _sums_used(self, v_u: np.ndarray) -> np.ndarray:
        """Risk-set sums of v given on the used rows only (weights already applied)."""
        E = self.ngroups
        flow = np.bincount(self.hs_u, weights=v_u, minlength=E + 1)
        flow -= np.bincount(self.hl_u, weights=v_u, minlength=E + 1)
        # S_g = sum_{b > g} flow[b]
        return np.cumsum(flow[:0:-1])[::-1]

    def _used_rows(self, v: np.ndarray) -> np.ndarray:
        return v if self.use_all else v[self.used]

    def risk_sums(self, v) -> np.ndarray:
        """Sum of w_i v_i over the risk set of each event group: (E,) or (E, k) for (n, k)."""
        v = np.asarray(v, dtype=float)
        if v.ndim == 2:
            return np.column_stack([self.risk_sums(v[:, j]) for j in range(v.shape[1])]).reshape(
                self.ngroups, v.shape[1]
            )
        vu = self._used_rows(v)
        if self.w_u is not None:
            vu = vu * self.w_u
        return self._sums_used(vu)

    def event_sums(self, v) -> np.ndarray:
        """Sum of w_i v_i over the events of each group: (E,) or (E, k) for (n, k)."""
        v = np.asarray(v, dtype=float)
        if v.ndim == 2:
            return np.column_stack([self.event_sums(v[:, j]) for j in range(v.shape[1])]).reshape(
                self.ngroups, v.shape[1]
            )
        ve = v[self.ev_pos]
        if self.w_ev is not None:
            ve = ve * self.w_ev
        return np.bincount(self.ev_group, weights=ve, minlength=self.ngroups)

    def n_at_risk(self) -> np.ndarray:
        """Unweighted number of rows at risk at each event group (int64)."""
        E = self.ngroups
        flow = np.bincount(self.hs_u, minlength=E + 1) - np.bincount(self.hl_u, minlength=E + 1)
        return np.cumsum(flow[:0:-1])[::-1]

    def row_sums(self, per_group) -> np.ndarray:
        """For each row, the sum of ``per_group`` (E,) or (E, k) over the groups it is at risk
        for, e.g. its cumulative hazard: (n,) or (n, k)."""
        v = np.asarray(per_group, dtype=float)
        if v.ndim == 1:
            c = np.concatenate([[0.0], np.cumsum(v)])
            return c[self.hs] - c[self.hl]
        out = np.empty((self.n, v.shape[1]), order="F")  # column-major: callers loop columns
        for j in range(v.shape[1]):
            c = np.concatenate([[0.0], np.cumsum(v[:, j])])
            np.subtract(c[self.hs], c[self.hl], out=out[:, j])
        return out

    def shift(self, eta: np.ndarray) -> np.ndarray | float:
        """Max of eta within each stratum (per row), so that exp(eta - shift) <= 1."""
        if self.n_strata == 1:
            return float(eta.max())
        mx = np.maximum.reduceat(eta[self.s_order], self.s_starts)
        return mx[self.strata]

    def ties(self, method: str = "efron") -> Ties:
        """Efron terms (one per tied event, fraction k/d, weight = mean event weight) or Breslow
        terms (one per group, weight = total event weight)."""
        d = self.d
        E = self.ngroups
        if method == "efron":
            di = d.astype(np.int64)
            group = np.repeat(np.arange(E), di)
            gstart = np.cumsum(di) - di
            k = np.arange(group.size) - gstart[group]
            frac = k / d[group]
            if self.weights is None:
                weight = np.ones(group.size)
            else:
                weight = (self.dw / d)[group]
        elif method == "breslow":
            group = np.arange(E)
            gstart = np.arange(E)
            frac = np.zeros(E)
            weight = self.dw.copy()
        else:
            raise ValueError(f"ties must be 'efron' or 'breslow', got {method!r}")
        return Ties(method, group, gstart, frac, weight)


@dataclass
class Moments:
    """Risk-set sums at one linear predictor (r = exp(eta - shift), w the case weights)."""

    r: np.ndarray  # (n,) exp(eta - shift)
    shift: np.ndarray | float  # per row (strata) or scalar
    S0: np.ndarray  # (E,) sum of w r over the risk set
    S1: np.ndarray  # (E, p) sum of w r x
    S2: np.ndarray | None  # (E, p, p) sum of w r x x'
    D0: np.ndarray  # (E,) the same sums over the tied events of the group
    D1: np.ndarray
    D2: np.ndarray | None


@dataclass
class CoxTerms:
    """What residuals and hazards need from one evaluation of the partial likelihood.

    Per group, with the tie terms t of the group (weight w_t, fraction f_t, denominator den_t =
    S0 - f_t D0): a0 = sum w_t / den_t (the hazard jump for exp(eta - shift) = 1),
    a1 = sum w_t f_t / den_t, b0, b1, b2 = sum w_t f_t^k / den_t^2.
    """

    r: np.ndarray
    S1: np.ndarray
    D1: np.ndarray
    a0: np.ndarray
    a1: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    b2: np.ndarray
    shift: np.ndarray | float

    def __iter__(self):  # unpack as the tuple (r, S1, D1, a0, a1, b0, b1, b2)
        return iter((self.r, self.S1, self.D1, self.a0, self.a1, self.b0, self.b1, self.b2))


class PartialLikelihood:
    """Cox partial likelihood (with case weights and offsets) of covariates x on risk sets."""

    def __init__(self, risksets: RiskSets, x, ties: str = "efron"):
        rs = risksets
        xs = np.asfortranarray(np.asarray(x, dtype=float))  # column access is contiguous
        if xs.ndim != 2 or xs.shape[0] != rs.n:
            raise ValueError(f"x must be ({rs.n}, p), got shape {xs.shape}")
        self.rs = rs
        self.n, self.p = xs.shape
        self.xs = xs
        self.xs_ev = np.asfortranarray(xs[rs.ev_pos])
        if rs.w_ev is None:
            self.sum_x_ev = self.xs_ev.sum(axis=0)
        else:
            self.sum_x_ev = rs.w_ev @ self.xs_ev
        self.xs_u = xs if rs.use_all else np.asfortranarray(xs[rs.used])
        self.iu = np.triu_indices(self.p)
        self.set_ties(ties)

    def set_ties(self, ties: str) -> None:
        """Choose Efron or Breslow ties."""
        self.ties = self.rs.ties(ties)

    def moments(self, eta: np.ndarray, second: bool = True) -> Moments:
        """Risk-set sums S0, S1, S2 and tied-event sums D0, D1, D2 at linear predictor eta."""
        rs, p = self.rs, self.p
        E = rs.ngroups
        shift = rs.shift(eta)
        r = np.exp(eta - shift)
        rw = r if rs.weights is None else r * rs.weights
        rw_u = rs._used_rows(rw)
        xs_u = self.xs_u
        rw_ev = rw[rs.ev_pos]
        g_ev = rs.ev_group
        S0 = rs._sums_used(rw_u)
        D0 = np.bincount(g_ev, weights=rw_ev, minlength=E)
        S1 = np.empty((E, p))
        D1 = np.empty((E, p))
        rx_u = []
        for j in range(p):
            rxj = rw_u * xs_u[:, j]
            rx_u.append(rxj)
            S1[:, j] = rs._sums_used(rxj)
            D1[:, j] = np.bincount(g_ev, weights=rw_ev * self.xs_ev[:, j], minlength=E)
        S2 = D2 = None
        if second:
            S2 = np.empty((E, p, p))
            D2 = np.empty((E, p, p))
            for jj, kk in zip(*self.iu, strict=True):
                j, k = int(jj), int(kk)
                S2[:, j, k] = S2[:, k, j] = rs._sums_used(rx_u[j] * xs_u[:, k])
                D2[:, j, k] = D2[:, k, j] = np.bincount(
                    g_ev, weights=rw_ev * self.xs_ev[:, j] * self.xs_ev[:, k], minlength=E
                )
        return Moments(r, shift, S0, S1, S2, D0, D1, D2)

    def evaluate(self, beta: np.ndarray, offset: np.ndarray | None = None, bound: bool = False):
        """Log partial likelihood, score and information at beta, and the :class:`CoxTerms`.

        ``offset`` (per row) is added to the linear predictor; ``bound`` clips the predictor to
        [-200, 22] as R's ``coxsafe`` in agfit5 (the penalised frailty fit).  Without them the
        predictor is used as it is (coxfit6 / agfit4).
        """
        rs = self.rs
        eta = self.xs @ beta
        if offset is not None:
            eta = eta + offset
        if bound:
            eta = np.clip(eta, -200.0, 22.0)
        m = self.moments(eta)
        shift, S0, S1, S2, D0, D1, D2 = m.shift, m.S0, m.S1, m.S2, m.D0, m.D1, m.D2
        E = rs.ngroups
        ev = rs.ev_pos

        # Efron (or Breslow) terms: denominator S0 - f * D0 with f = k/d, k = 0..d-1.
        t = self.ties
        tg, f, w = t.group, t.frac, t.weight
        den = S0[tg] - f * D0[tg]
        inv = w / den
        inv2 = inv / den
        starts = t.gstart
        a0 = np.add.reduceat(inv, starts) if E else inv
        a1 = np.add.reduceat(inv * f, starts) if E else inv
        b0 = np.add.reduceat(inv2, starts) if E else inv
        b1 = np.add.reduceat(inv2 * f, starts) if E else inv
        b2 = np.add.reduceat(inv2 * f * f, starts) if E else inv

        if rs.weights is None:
            if not isinstance(shift, np.ndarray):
                ev_shift = float(shift) * ev.size
            else:
                ev_shift = float(shift[ev].sum())
            if offset is None and not bound:
                loglik = float(self.sum_x_ev @ beta) - ev_shift
            else:
                loglik = float(eta[ev].sum()) - ev_shift
        else:
            sh_ev = shift[ev] if isinstance(shift, np.ndarray) else shift
            loglik = float(rs.w_ev @ (eta[ev] - sh_ev))
        loglik -= float(np.sum(w * np.log(den)))
        # u = sum w x_ev - sum_terms w * (S1 - f D1) / den
        u = self.sum_x_ev - (a0 @ S1 - a1 @ D1)
        # imat = sum_terms w * [(S2 - f D2)/den - (S1 - f D1)(S1 - f D1)' / den^2]
        assert S2 is not None and D2 is not None  # second moments are computed for the score
        imat = np.einsum("g,gjk->jk", a0, S2) - np.einsum("g,gjk->jk", a1, D2)
        imat -= np.einsum("g,gj,gk->jk", b0, S1, S1)
        cross = np.einsum("g,gj,gk->jk", b1, S1, D1)
        imat += cross + cross.T
        imat -= np.einsum("g,gj,gk->jk", b2, D1, D1)
        return loglik, u, imat, CoxTerms(m.r, S1, D1, a0, a1, b0, b1, b2, shift)

    # ---- residuals and hazards ---------------------------------------------------------------

    def _mean_ev(self, terms: CoxTerms) -> np.ndarray:
        """Per group, the average of the d Efron means (the mean for Breslow): R's mh3."""
        S1, D1, a0, a1 = terms.S1, terms.D1, terms.a0, terms.a1
        # sum_t w_t (S1 - f_t D1)/den_t with w_t = dw / d (Efron) or dw (Breslow), divided by dw
        return (S1 * a0[:, None] - D1 * a1[:, None]) / self.rs.dw[:, None]

    def score_residuals(self, terms: CoxTerms) -> np.ndarray:
        """R's agscore3 score residuals (n, p), input order, unweighted, in x's coordinates.

        For row i: int (x_i - xbar(t)) dM_i(t) with dM_i = dN_i - r_i dH; a tied event gets only
        its Efron share of the hazard jump.
        """
        rs, p = self.rs, self.p
        r, S1, D1, a0, a1, b0, b1, b2 = terms
        if rs.ngroups == 0:
            return np.zeros((self.n, p))
        # Per group: hazard jump dH, x-weighted jump dXH, and the Efron corrections for the tied
        # events (mh1, mh2: share of the jump the events do not get; mh3: average mean).
        dH = a0
        dXH = S1 * b0[:, None] - D1 * b1[:, None]
        mh1 = a1
        mh2 = S1 * b1[:, None] - D1 * b2[:, None]
        mh3 = self._mean_ev(terms)
        CH = np.concatenate([[0.0], np.cumsum(dH)])
        CXH = np.concatenate([np.zeros((1, p)), np.cumsum(dXH, axis=0)])
        hs, hl = rs.hs, rs.hl
        Hi = CH[hs] - CH[hl]
        resid = np.empty((self.n, p), order="F")
        ev, g = rs.ev_pos, rs.ev_group
        r_ev = r[ev]
        mh1_ev = mh1[g]
        for j in range(p):
            cj = np.ascontiguousarray(CXH[:, j])
            col = self.xs[:, j] * Hi
            col -= cj[hs]
            col += cj[hl]
            col *= -r
            xe = self.xs_ev[:, j]
            col[ev] += (xe - mh3[g, j]) + r_ev * (xe * mh1_ev - mh2[g, j])
            resid[:, j] = col
        return resid

    def schoenfeld_residuals(self, terms: CoxTerms) -> np.ndarray:
        """Schoenfeld residuals x_i - xbar(t_i) of the events (rows ``rs.ev_pos``), unweighted;
        tied Efron events share the average of the d Efron means (R's coxscho)."""
        return self.xs_ev - self._mean_ev(terms)[self.rs.ev_group]

    def expected(self, terms: CoxTerms) -> np.ndarray:
        """Expected number of events of each row, r_i times its cumulative hazard (a tied event
        gets its Efron share of the jump at its own time)."""
        rs = self.rs
        e = terms.r * rs.row_sums(terms.a0)
        e[rs.ev_pos] -= terms.r[rs.ev_pos] * terms.a1[rs.ev_group]
        return e

    def martingale_residuals(self, terms: CoxTerms) -> np.ndarray:
        """Martingale residuals event - expected (n,), unweighted (R's type "martingale")."""
        m = -self.expected(terms)
        m[self.rs.ev_pos] += 1.0
        return m

    def hazard(self, terms: CoxTerms) -> np.ndarray:
        """Baseline hazard increments at the event groups for the linear predictor evaluated
        (eta = 0 is the baseline): sum over the group's terms of w_t / den_t."""
        shift = terms.shift
        if not isinstance(shift, np.ndarray):
            return terms.a0 * np.exp(-float(shift))
        per_stratum = np.full(self.rs.n_strata, np.nan)
        per_stratum[self.rs.strata] = shift
        return terms.a0 * np.exp(-per_stratum[self.rs.group_stratum])
