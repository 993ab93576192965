"""Joint gamma-frailty model for recurrent episodes and a terminal event (death).

The model of Liu, Wolfe and Huang (2004), as R's ``frailtypack::frailtyPenal(..., recurrentAG =
TRUE)`` states it (Rondeau et al. 2007), for participant i with frailty Z_i ~ Gamma(mean 1,
variance theta):

* recurrent episodes: Andersen-Gill intensity  Z_i lambda0(t) exp(beta'x_i)  on the (start, stop]
  rows of the counting-process data;
* terminal event:     hazard  Z_i^alpha mu0(t) exp(gamma'x_i)  from the participant's entry (first
  start) to the end of follow-up (last stop), an event when the participant's follow-up ended by
  a terminal event (:func:`terminal_status`).

Death stops the episode process (no episodes after it) and is itself modelled: a participant with
many episodes has a large Z and, for alpha > 0, a higher hazard of death, so death is informative
censoring of the episodes which the shared frailty accounts for.  beta is a *conditional* effect:
the ratio of episode intensities for the same frailty value, among participants alive.

Estimation: semiparametric maximum likelihood.  Both baseline hazards are step functions with a
jump at each distinct event time of their process (the nonparametric MLE, Breslow-type ties), so,
unlike frailtypack's penalised splines, no smoothing parameter has to be chosen and the model with
no terminal events *is* the shared gamma-frailty Cox model of :mod:`recurstudy.models.frailty`
(its EM / NPMLE fixed point, Breslow ties): Therneau, Grambsch and Pankratz (2003) show that the
penalised partial likelihood of ``coxph(... + frailty(id))`` and the marginal likelihood profiled
over the baseline jumps share their maximiser in beta for each theta, and that the I-likelihood
differs from the profile likelihood by a constant (here sum_k d_k log d_k - D over the event
times: the tests check it to 1e-7).  With alpha = 1 the joint model is the shared frailty model
stratified by event type, which R fits as ``coxph(... + strata(type) + frailty(id), ties =
"breslow")``: the tests compare with it (tests/fixtures/joint_frailty/).

Validation (tests/test_joint_frailty.py, benchmarks/bench_joint_frailty.py): R at alpha = 1 (beta
and gamma to 1e-6, R's own inner tolerance), reduction to ``frailty_cox`` without deaths, alpha = 0
against a Cox model of death, finite differences of the profile score, the quadrature against
the closed form and scipy's quad, and simulated truth.  Replicate studies (alpha estimated,
truth beta -0.5, gamma 0.4, theta 0.6, alpha 1.5): every parameter's mean within 1.1 Monte Carlo
SE of the truth in each.  Mean model SE against the replicate SD (which is itself uncertain by
11-13% with 30-40 replicates): n = 1000, 40 replicates: beta 0.067 / 0.068, gamma 0.124 / 0.142,
theta 0.043 / 0.035, alpha 0.154 / 0.146; n = 2000, 30 other seeds: beta 0.047 / 0.045, gamma
0.088 / 0.102, theta 0.031 / 0.023, alpha 0.110 / 0.090; but n = 2000 with the first 40 seeds:
beta 0.047 / 0.063, gamma 0.088 / 0.120 (coverage 0.88 and 0.85), not explained (alpha fixed at 1,
n = 500 and 2000: SEs within 7% of the SDs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import pandas as pd

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
from recurstudy.models.risksets import RiskSets, strata_codes

optimize = lazy_import("scipy.optimize")
special = lazy_import("scipy.special")

__all__ = [
    "JointFrailtyFit",
    "TERMINAL_PREFIX",
    "gamma_posterior",
    "joint_frailty_fit",
    "terminal_status",
]

ID = "participant_id"
TERMINAL_PREFIX = "terminal: "
DEFAULT_TERMINAL_EVENTS = ("death",)
_LOG_THETA_BOUNDS = (np.log(1e-6), np.log(1e3))
_ALPHA_BOUNDS = (-20.0, 20.0)


# --------------------------------------------------------------------------------------------
# Terminal status: the one place that says which participants had a terminal event
# --------------------------------------------------------------------------------------------


def terminal_status(
    counting_process: pd.DataFrame,
    participants: pd.DataFrame | None = None,
    terminal_events: tuple[str, ...] | list[str] = DEFAULT_TERMINAL_EVENTS,
) -> tuple[pd.Series, str]:
    """Each participant's terminal-event indicator (0/1, indexed by participant id) and its source.

    In order: derive's ``terminal`` 0/1 column of the counting-process data (1 on the last
    interval of a participant whose follow-up ended by one of the config's ``terminal_events``;
    the maximum over a participant's rows is taken), else the participants' ``end_reason`` in
    ``terminal_events`` (for tables not made by derive), else none (all 0).  The follow-up of a
    participant with a terminal event ends at it: their last ``stop``.
    """
    ids = pd.Index(pd.unique(counting_process[ID]), name=ID)
    if "terminal" in counting_process.columns:
        t = pd.to_numeric(counting_process["terminal"], errors="coerce")
        bad = t.notna() & ~t.isin([0, 1])
        if t.isna().any() or bad.any():
            raise NotEstimable("column 'terminal' of the counting-process data must be 0 or 1")
        per = t.groupby(counting_process[ID].to_numpy()).max().reindex(ids)
        return per.astype(int), "the counting-process data's 'terminal' column"
    events = [str(e) for e in terminal_events]
    if participants is not None and "end_reason" in participants.columns:
        reason = participants.set_index(ID)["end_reason"].astype("string")
        flag = reason.isin(events).astype(int).reindex(ids).fillna(0).astype(int)
        return flag, f"participants' end_reason in [{', '.join(events)}]"
    return pd.Series(0, index=ids, dtype=int), "none: no 'terminal' column and no end_reason"


# --------------------------------------------------------------------------------------------
# Posterior expectations of the frailty
# --------------------------------------------------------------------------------------------


@dataclass
class Posterior:
    """Per participant: log of the marginal likelihood's frailty integral and posterior moments."""

    log_integral: np.ndarray  # log int z^d' exp(-zH - z^alpha M) g(z; theta) dz
    ez: np.ndarray  # E[Z]
    eza: np.ndarray  # E[Z^alpha]
    elogz: np.ndarray  # E[log Z]
    ezalogz: np.ndarray  # E[Z^alpha log Z]


_T_RANGE = (-7.0, 4.0)  # t range of the sinh rule: left tail exp(a sigma sinh t), right exp(-e^u)


def _sinh_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes t and log weights log(h cosh t) of the trapezoid rule on u = sigma sinh(t)."""
    t = np.linspace(*_T_RANGE, n)
    return t, np.log((t[1] - t[0]) * np.cosh(t))


def gamma_posterior(
    d: np.ndarray,
    delta: np.ndarray,
    H: np.ndarray,
    M: np.ndarray,
    theta: float,
    alpha: float,
    nodes: int = 64,
    *,
    quadrature: bool = False,
) -> Posterior:
    """Posterior of Z ~ Gamma(1/theta, rate 1/theta) given d episodes (cumulative intensity H
    Z) and a terminal indicator delta (cumulative hazard M Z^alpha), vectorised over participants.

    alpha = 1 (or no terminal hazard, M = 0): gamma posterior, closed form.  Otherwise an
    adaptive trapezoid rule with ``nodes`` nodes on u = log(z b), b = H + 1/theta, centred at the
    mode and scaled by the curvature of the log posterior, after the substitution u = mode +
    sigma sinh(t)
    (``quadrature=True`` uses it for alpha = 1 too: how the tests check it).
    """
    nu = 1.0 / theta
    d = np.asarray(d, dtype=float)
    delta = np.asarray(delta, dtype=float)
    dprime = d + alpha * delta
    a = dprime + nu
    # the gamma part: log[Gamma(a) b^-a nu^nu / Gamma(nu)], stably (b / nu = 1 + theta H)
    closed = not quadrature and (alpha == 1.0 or not np.any(M > 0))
    if closed:
        Hc = H + M if alpha == 1.0 else H
        b = Hc + nu
        log_gam = (
            special.gammaln(a)
            - special.gammaln(nu)
            - dprime * np.log(b)
            - np.log1p(theta * Hc) * nu
        )
        ez = a / b
        elogz = special.digamma(a) - np.log(b)
        if alpha == 1.0:
            eza, ezalogz = ez, ez * (special.digamma(a + 1.0) - np.log(b))
        else:  # M = 0 everywhere: E[Z^alpha] of a gamma
            eza = np.exp(special.gammaln(a + alpha) - special.gammaln(a) - alpha * np.log(b))
            ezalogz = eza * (special.digamma(a + alpha) - np.log(b))
        return Posterior(log_gam, ez, eza, elogz, ezalogz)

    b = H + nu
    log_gam = (
        special.gammaln(a) - special.gammaln(nu) - dprime * np.log(b) - np.log1p(theta * H) * nu
    )
    # E_{U ~ Gamma(a, 1)}[exp(-Mp U^alpha)] with Mp = M b^-alpha: integrate over u = log U
    Mp = M * np.exp(-alpha * np.log(b))
    # mode of phi(u) = a u - e^u - Mp e^(alpha u): phi' decreasing and concave, so Newton from
    # u0 = log a (where phi' <= 0) decreases monotonically to the root
    u = np.log(a)
    for _ in range(100):
        eu, eau = np.exp(u), np.exp(alpha * u)
        g = a - eu - alpha * Mp * eau
        h = -eu - alpha * alpha * Mp * eau
        step = g / h
        u = u - step
        if np.max(np.abs(step)) < 1e-12:
            break
    eu, eau = np.exp(u), np.exp(alpha * u)
    sigma = 1.0 / np.sqrt(eu + alpha * alpha * Mp * eau)
    # trapezoid rule after u = mode + sigma sinh(t): the left tail of phi is only exponential
    # (exp(a u), heavy when a is small) and becomes doubly exponential in t
    t, lw = _sinh_nodes(nodes)
    un = np.multiply.outer(sigma, np.sinh(t))
    un += u[:, None]
    eun = np.exp(un)
    eaun = np.exp(alpha * un)
    lv = a[:, None] * un
    lv -= eun
    lv -= Mp[:, None] * eaun
    lv += lw[None, :] - special.gammaln(a)[:, None]
    mx = lv.max(axis=1)
    p = np.exp(lv - mx[:, None])  # posterior weights at the nodes (normalised below)
    tot = p.sum(axis=1)
    log_e = mx + np.log(tot) + np.log(sigma)  # log E[exp(-Mp U^alpha)]
    p /= tot[:, None]
    logb = np.log(b)
    ez = np.einsum("ij,ij->i", p, eun) / b
    eza = np.einsum("ij,ij->i", p, eaun) * np.exp(-alpha * logb)
    eu_ = np.einsum("ij,ij->i", p, un)
    elogz = eu_ - logb
    ezalogz = (
        np.einsum("ij,ij->i", p * eaun, un) - logb * np.einsum("ij,ij->i", p, eaun)
    ) * np.exp(-alpha * logb)
    return Posterior(log_gam + log_e, ez, eza, elogz, ezalogz)


# --------------------------------------------------------------------------------------------
# The profile likelihood and its maximisation
# --------------------------------------------------------------------------------------------


@dataclass
class JointFrailtyFit:
    """Result of :func:`joint_frailty_fit`.  ``cov`` is over ``params`` (names in
    ``param_names``): beta, then gamma (if a terminal part), then theta, alpha (if estimated)."""

    beta: np.ndarray
    gamma: np.ndarray  # empty without terminal events
    theta: float
    alpha: float  # NaN without terminal events
    se_beta: np.ndarray
    se_gamma: np.ndarray
    se_theta: float  # NaN when fixed
    se_alpha: float  # NaN when fixed or without terminal events
    cov: np.ndarray
    param_names: list[str]
    loglik: float  # the marginal log-likelihood at the estimates (jumps profiled)
    names: list[str]
    terminal: bool  # whether the terminal part was fitted (terminal events present)
    converged: bool
    message: str
    n_participants: int
    n_events: int
    n_terminal: int
    iterations: int  # outer (L-BFGS-B + Newton) iterations
    em_iterations: int  # total EM iterations over all profile evaluations
    frailty: np.ndarray  # posterior means E[Z_i | data], by participant
    groups: np.ndarray
    recurrent_hazard: pd.DataFrame = field(default_factory=pd.DataFrame)  # time, jump
    terminal_hazard: pd.DataFrame = field(default_factory=pd.DataFrame)


class _Problem:
    """Risk sets of both processes and the profile likelihood over the baseline jumps."""

    def __init__(self, X, start, stop, event, gcode, G, Xt, entry, tend, delta, nodes, tol, maxit):
        self.G, self.nodes, self.tol, self.maxit = G, nodes, tol, maxit
        self.rs = RiskSets(stop, event, start)
        self.xc = X - X.mean(axis=0)
        self.group = gcode
        ev = self.rs.ev_pos
        self.ev = ev
        self.d_grp = np.bincount(gcode[ev], minlength=G).astype(float)
        self.sum_x_ev = self.xc[ev].sum(axis=0)
        self.terminal = bool(delta.sum() > 0)
        self.delta = delta.astype(float)
        if self.terminal:
            self.rt = RiskSets(tend, delta, entry)
            self.xt = Xt - Xt.mean(axis=0)
            self.sum_xt_ev = self.xt[self.rt.ev_pos].sum(axis=0)
        self.w = np.ones(G)
        self.v = np.ones(G)
        self.em_total = 0

    def _em_step(self, w, v, r, eta, rt, etat, theta, alpha):
        """One EM step from posterior means (w, v): the jumps they imply (M-step), the marginal
        log-likelihood at those jumps, and the posterior there (E-step)."""
        rs, g = self.rs, self.group
        lam = rs.d / rs.risk_sums(w[g] * r)
        hrow = r * rs.row_sums(lam)
        H = np.bincount(g, weights=hrow, minlength=self.G)
        ll = float(np.sum(np.log(lam[rs.ev_group])) + eta[self.ev].sum())
        mu = None
        if self.terminal:
            mu = self.rt.d / self.rt.risk_sums(v * rt)
            M = rt * self.rt.row_sums(mu)
            ll += float(np.sum(np.log(mu[self.rt.ev_group])) + etat[self.rt.ev_pos].sum())
        else:
            M = np.zeros(self.G)
        post = gamma_posterior(self.d_grp, self.delta, H, M, theta, alpha, self.nodes)
        ll += float(np.sum(post.log_integral))
        return ll, post, hrow, M, lam, mu

    def profile(self, beta, gamma, theta, alpha, *, reset=False):
        """Marginal log-likelihood maximised over the jumps and its gradient with respect to
        (beta, gamma, theta, alpha) at the profiled jumps.

        EM over the jumps, warm started from the last call, accelerated by SQUAREM (Varadhan and
        Roland 2008, scheme S3) on the log posterior means; an extrapolation that lowers the
        likelihood is replaced by the plain EM step, so the likelihood never decreases."""
        eta = self.xc @ beta
        eta = eta - eta.max()
        r = np.exp(eta)
        rt = etat = None
        if self.terminal:
            etat = self.xt @ gamma
            etat = etat - etat.max()
            rt = np.exp(etat)
        if reset or not (np.all(np.isfinite(self.w)) and np.all(np.isfinite(self.v))):
            self.w, self.v = np.ones(self.G), np.ones(self.G)
        args = (r, eta, rt, etat, theta, alpha)
        x0 = np.log(np.concatenate([self.w, self.v]))
        G = self.G

        def F(x):
            ex = np.exp(x)
            out = self._em_step(ex[:G], ex[G:], *args)
            post = out[1]
            return np.log(np.concatenate([post.ez, post.eza])), out

        converged = False
        steps = 0
        ll_prev = -np.inf
        while steps < self.maxit:
            x1, out1 = F(x0)
            steps += 1
            rr = x1 - x0
            change = float(np.max(np.abs(rr)))
            ll1 = out1[0]
            if change < self.tol and abs(ll1 - ll_prev) <= 1e-3 * self.tol * (1.0 + abs(ll1)):
                converged = True
                x0, out = x1, out1
                break
            ll_prev = ll1
            x2, out2 = F(x1)
            steps += 1
            vv = x2 - x1 - rr
            nv = float(np.sqrt(vv @ vv))
            if not np.isfinite(nv) or nv == 0.0:
                x0, out = x2, out2
                continue
            step_len = min(-float(np.sqrt(rr @ rr)) / nv, -1.0)
            xp = x0 - 2.0 * step_len * rr + step_len * step_len * vv
            x3, out3 = F(xp) if np.all(np.isfinite(xp)) else (x2, (-np.inf,))
            steps += 1
            if np.isfinite(out3[0]) and out3[0] >= out2[0] and np.all(np.isfinite(x3)):
                x0 = x3
            else:
                x0 = x2
            out = out2
        else:
            out = F(x0)[1]
        self.em_total += steps
        ll, post, hrow, M, lam, mu = out
        # the state at the converged point: posterior means consistent with the jumps
        w, v = post.ez, post.eza
        if np.all(np.isfinite(w)) and np.all(np.isfinite(v)):
            self.w, self.v = w, v
        g = self.group
        # gradient (envelope theorem: partial derivatives at the profiled jumps)
        grad_b = self.sum_x_ev - (self.xc * (post.ez[g] * hrow)[:, None]).sum(axis=0)
        nu = 1.0 / theta
        dnu = np.sum(post.elogz - post.ez + np.log(nu) + 1.0 - special.digamma(nu))
        grad_t = -nu * nu * dnu
        if self.terminal:
            grad_g = self.sum_xt_ev - (self.xt * (post.eza * M)[:, None]).sum(axis=0)
            grad_a = float(np.sum(self.delta * post.elogz - M * post.ezalogz))
        else:
            grad_g, grad_a = np.zeros(0), 0.0
        state = {"lam": lam, "mu": mu, "post": post}
        return ll, grad_b, grad_g, float(grad_t), grad_a, converged, state


def joint_frailty_fit(
    X,
    start,
    stop,
    event,
    group,
    terminal,
    *,
    names: list[str] | None = None,
    alpha: float | None = None,
    theta: float | None = None,
    nodes: int = 64,
    tol: float = 1e-10,
    em_max: int = 5000,
    hessian_step: float = 1e-4,
) -> JointFrailtyFit:
    """Fit the joint gamma-frailty model by maximising the profile likelihood.

    ``X`` (n, p) covariates of the (start, stop] rows (baseline covariates: the terminal model
    uses each participant's first row), ``event`` 0/1 per row, ``group`` the participant of each
    row, ``terminal`` the 0/1 terminal indicators aligned with the sorted unique participant
    labels (the terminal event's risk period is (first start, last stop]).  ``alpha``
    None estimates the association, a number fixes it (frailtypack's ``Alpha = "None"`` is
    alpha fixed at 1); ``theta`` None estimates the frailty variance.
    Raises :class:`NotEstimable` when the data cannot estimate the model.
    """
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    n, p = X.shape
    names = list(names) if names is not None else [f"x{j}" for j in range(p)]
    start = np.asarray(start, dtype=float)
    stop = np.asarray(stop, dtype=float)
    event = np.asarray(event).astype(bool)
    gcode, G = strata_codes(group)
    groups = np.unique(np.asarray(group))
    delta = np.asarray(terminal, dtype=float).reshape(-1)
    if delta.shape[0] != G:
        raise ValueError(f"terminal has {delta.shape[0]} values for {G} participants")
    n_events, n_terminal = int(event.sum()), int(delta.sum())
    counts = {"n_participants": G, "n_events": n_events}
    if n_events == 0:
        raise NotEstimable("no episodes: the recurrent-event model cannot be fitted", **counts)
    if G < 2:
        raise NotEstimable("fewer than 2 participants", **counts)
    first = np.unique(gcode, return_index=True)[1]
    Xt = X[first]
    entry = np.minimum.reduceat(
        start[np.argsort(gcode, kind="stable")], np.r_[0, np.cumsum(np.bincount(gcode))[:-1]]
    )
    tend = np.maximum.reduceat(
        stop[np.argsort(gcode, kind="stable")], np.r_[0, np.cumsum(np.bincount(gcode))[:-1]]
    )
    _check_separation(X, event, names, "episodes", counts)
    terminal_part = n_terminal > 0
    if terminal_part:
        _check_separation(Xt, delta.astype(bool), names, "terminal events", counts)
    prob = _Problem(X, start, stop, event, gcode, G, Xt, entry, tend, delta, nodes, tol, em_max)

    q = p if terminal_part else 0
    est_theta = theta is None
    est_alpha = terminal_part and alpha is None
    alpha_val = (1.0 if alpha is None else float(alpha)) if terminal_part else 1.0
    theta_val = 0.5 if theta is None else float(theta)
    if not (np.isfinite(theta_val) and theta_val > 0):
        raise ValueError(f"fixed theta must be positive, got {theta}")

    # natural parameters: beta (p), gamma (q), theta, alpha (those estimated)
    def unpack(x):
        beta, gam = x[:p], x[p : p + q]
        k = p + q
        th = x[k] if est_theta else theta_val
        k += est_theta
        al = x[k] if est_alpha else alpha_val
        return beta, gam, th, al

    def evaluate(x):
        beta, gam, th, al = unpack(x)
        ll, gb, gg, gt, ga, ok, state = prob.profile(beta, gam, th, al)
        grad = np.concatenate([gb, gg, [gt] if est_theta else [], [ga] if est_alpha else []])
        return ll, grad, ok, state

    x0 = np.concatenate(
        [np.zeros(p + q), [theta_val] if est_theta else [], [alpha_val] if est_alpha else []]
    )
    k_theta = p + q if est_theta else None
    scale = float(max(n_events, 1))

    # L-BFGS-B on log theta
    def to_opt(x):
        y = x.copy()
        if est_theta:
            y[k_theta] = np.log(x[k_theta])
        return y

    def from_opt(y):
        x = y.copy()
        if est_theta:
            x[k_theta] = np.exp(y[k_theta])
        return x

    def objective(y):
        x = from_opt(y)
        ll, grad, _, _ = evaluate(x)
        gy = grad.copy()
        if est_theta:
            gy[k_theta] *= x[k_theta]
        if not np.isfinite(ll):
            return np.inf, np.zeros_like(y)
        return -ll / scale, -gy / scale

    bounds: list[tuple[float | None, float | None]] = [(None, None)] * (p + q)
    if est_theta:
        bounds.append(_LOG_THETA_BOUNDS)
    if est_alpha:
        bounds.append(_ALPHA_BOUNDS)
    messages: list[str] = []
    iterations = 0
    if x0.size:
        res = optimize.minimize(
            objective,
            to_opt(x0),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 500, "ftol": 1e-15, "gtol": 1e-9},
        )
        x = from_opt(res.x)
        iterations = int(res.nit)
        if est_theta and x[k_theta] <= 1.01 * np.exp(_LOG_THETA_BOUNDS[0]):
            # the likelihood is largest at theta -> 0: no detectable frailty.  Report the fit at
            # the bound (the Andersen-Gill and Cox fits, alpha not identified) with its errors
            # for the other parameters, flagged as not converged.
            at_bound = joint_frailty_fit(
                X, start, stop, event, group, terminal, names=names,
                alpha=alpha_val, theta=float(np.exp(_LOG_THETA_BOUNDS[0])), nodes=nodes,
                tol=tol, em_max=em_max, hessian_step=hessian_step,
            )  # fmt: skip
            at_bound.converged = False
            at_bound.message = "; ".join(
                m
                for m in (
                    "theta at its lower bound (1e-06): the marginal likelihood is largest without "
                    "frailty (no detectable frailty); estimates are those of separate "
                    "Andersen-Gill and Cox fits, alpha is not identified",
                    at_bound.message,
                )
                if m
            )
            at_bound.alpha = np.nan if not terminal_part else at_bound.alpha
            at_bound.iterations += iterations
            return at_bound
    else:
        x = x0

    # Newton polish with the numerical Hessian of the profile likelihood
    ll, grad, ok, state = evaluate(x)
    hess = np.zeros((x.size, x.size))
    for newton in range(5 if x.size else 0):
        if newton == 0 or newton == 2:  # a Hessian refreshed once: the start is close already
            hess = _hessian(evaluate, x, hessian_step, k_theta)
        try:
            step = -np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):
            break
        accepted = False
        halvings = 0
        for halvings in range(30):  # noqa: B007 (used after the loop)
            xn = x + step
            if est_theta and xn[k_theta] <= 0:
                step = step / 2
                continue
            lln, gradn, okn, staten = evaluate(xn)
            if np.isfinite(lln) and lln >= ll - 1e-10 * abs(ll):
                accepted = True
                break
            step = step / 2
        iterations += 1
        if not accepted:
            break
        decrement = float(-grad @ step)
        x, ll, grad, ok, state = xn, lln, gradn, okn, staten
        if abs(decrement) < 1e-12 * max(1.0, abs(ll)) and halvings == 0:
            break
    # final evaluation: Hessian at the estimate
    ll, grad, ok, state = evaluate(x)
    hess = _hessian(evaluate, x, hessian_step, k_theta) if x.size else np.zeros((0, 0))
    beta, gam, th, al = unpack(x)
    converged = bool(ok)
    if not ok:
        messages.append(f"EM over the baseline jumps did not converge in {em_max} iterations")
    gmax = float(np.max(np.abs(grad))) if grad.size else 0.0
    if gmax > 1e-4 * max(1.0, np.sqrt(n_events)):
        converged = False
        messages.append(f"profile score not zero at the estimate (max |score| = {gmax:.3g})")
    try:
        cov = np.linalg.inv(-hess)
    except np.linalg.LinAlgError:
        cov = np.full_like(hess, np.nan)
        messages.append("observed information singular")
        converged = False
    se = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.nan))
    if np.any(~np.isfinite(se)):
        converged = False
        messages.append("observed information not positive definite")
    if est_theta and (
        th <= np.exp(_LOG_THETA_BOUNDS[0]) * 1.01 or th >= np.exp(_LOG_THETA_BOUNDS[1]) * 0.99
    ):
        converged = False
        messages.append(
            f"theta at the boundary of its search range ({th:.3g}): no detectable frailty "
            "(or an unbounded one); standard errors are unreliable"
        )
    if est_alpha and abs(al) >= 0.99 * _ALPHA_BOUNDS[1]:
        converged = False
        messages.append(
            f"alpha at the boundary of its search range ({al:.3g}): the association of the "
            "frailty with the terminal hazard is not identified by these data (too few terminal "
            "events?); fix it with the option alpha"
        )
    pnames = [*names, *[TERMINAL_PREFIX + nm for nm in names][:q]]
    if est_theta:
        pnames.append("theta")
    if est_alpha:
        pnames.append("alpha")
    k = p + q
    se_theta = float(se[k]) if est_theta else np.nan
    se_alpha = float(se[k + est_theta]) if est_alpha else np.nan
    post = state["post"]
    rs = prob.rs
    rec_h = pd.DataFrame({"time": rs.group_time, "jump": _unshift(state["lam"], prob.xc, beta)})
    term_h = pd.DataFrame(columns=["time", "jump"])
    if terminal_part:
        term_h = pd.DataFrame(
            {"time": prob.rt.group_time, "jump": _unshift(state["mu"], prob.xt, gam)}
        )
    if not terminal_part:
        messages.append(
            "no terminal events: the model reduces to the shared gamma-frailty model "
            "(no terminal-event terms)"
        )
    return JointFrailtyFit(
        beta=beta,
        gamma=gam,
        theta=float(th),
        alpha=float(al) if terminal_part else np.nan,
        se_beta=se[:p],
        se_gamma=se[p : p + q],
        se_theta=se_theta,
        se_alpha=se_alpha,
        cov=cov,
        param_names=pnames,
        loglik=float(ll),
        names=names,
        terminal=terminal_part,
        converged=converged,
        message="; ".join(messages),
        n_participants=G,
        n_events=n_events,
        n_terminal=n_terminal,
        iterations=iterations,
        em_iterations=prob.em_total,
        frailty=post.ez,
        groups=groups,
        recurrent_hazard=rec_h,
        terminal_hazard=term_h,
    )


def _unshift(jumps: np.ndarray, xc: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Baseline jumps for the centred covariates at zero (the profile uses exp(eta - max))."""
    eta = xc @ coef
    return jumps * np.exp(-eta.max())


def _hessian(evaluate, x: np.ndarray, rel: float, positive: int | None = None) -> np.ndarray:
    """Central differences of the analytic profile score, symmetrised.  The step is relative
    (``rel`` times max(|x|, 0.1)); for the positive parameter (theta) purely relative."""
    k = x.size
    hess = np.empty((k, k))
    for j in range(k):
        h = rel * (x[j] if j == positive else max(abs(x[j]), 0.1))
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        gp = evaluate(xp)[1]
        gm = evaluate(xm)[1]
        hess[:, j] = (gp - gm) / (2.0 * h)
    return 0.5 * (hess + hess.T)


def _check_separation(X: np.ndarray, event: np.ndarray, names: list[str], what: str, counts):
    """Monotone likelihood for a binary covariate: every event (or none) in one of its levels."""
    for j, nm in enumerate(names):
        col = X[:, j]
        levels = np.unique(col)
        if levels.size != 2:
            continue
        for lev in levels:
            at = col == lev
            if event[at].sum() == 0 or event[~at].sum() == 0:
                where = levels[levels != lev][0] if event[at].sum() == 0 else lev
                raise NotEstimable(
                    f"{what} occur only where {nm} = {where:g}: the ratio for that term is not "
                    "estimable (the likelihood is monotone: its coefficient runs off to "
                    "infinity)",
                    **counts,
                )


# --------------------------------------------------------------------------------------------
# The registered model
# --------------------------------------------------------------------------------------------


# ICH E9(R1) strategies (ModelDescription.strategies) for the two intercurrent events.
STRATEGIES = (
    (
        "terminal event",
        "while alive, modelled jointly: death ends the episode process and is a second outcome "
        "sharing the participant's frailty, so informative censoring by death through the "
        "frailty is accounted for; the episode rate ratio is conditional on the frailty among "
        "participants alive, and the death hazard ratio is reported beside it",
    ),
    (
        "informative dropout",
        "hypothetical: as if participants who dropped out had stayed in follow-up, assuming "
        "dropout is independent of the episodes given the covariates (censoring at random; "
        "dropout depending on the frailty is not accounted for)",
    ),
)


@dataclass(frozen=True)
class JointFrailtyOptions:
    """Options of the joint frailty model."""

    alpha: float | Literal["estimate"] = option(
        "estimate", doc="association of the frailty with the terminal hazard: estimate, or fix it"
    )
    theta: float | None = option(
        None, minimum=0.0, exclusive_minimum=True, doc="fix the frailty variance"
    )
    nodes: int = option(64, minimum=8, doc="quadrature nodes (alpha not 1)")
    tol: float = option(
        1e-10, minimum=0.0, exclusive_minimum=True, doc="EM tolerance (max change of log E[Z])"
    )
    em_max: int = option(5000, minimum=1, doc="EM iterations per profile evaluation")


@register
class JointFrailty(Model):
    """Joint gamma-frailty model of the episodes (Andersen-Gill) and a terminal event, as
    ``frailtypack::frailtyPenal(..., recurrentAG = TRUE)`` with nonparametric baselines."""

    kind: ClassVar[str] = "joint_frailty"
    datasets: ClassVar[tuple[str, ...]] = ("counting_process",)
    Options: ClassVar[type] = JointFrailtyOptions
    group: ClassVar[str] = "conditional"
    title: ClassVar[str] = "Joint frailty model (episodes and terminal event)"
    effect_measure: ClassVar[str | None] = "rate ratio"
    estimand: ClassVar[str] = (
        "ratio of the episode intensities, intervention vs control, for the same frailty among "
        "participants alive (conditional on the gamma frailty shared with the terminal hazard; "
        "death ends the episode process and is modelled jointly, not censored at random); "
        "terminal-event rows: the hazard ratio of the terminal event for the same frailty; "
        "model-based errors (observed information of the profile likelihood)"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = (
        ExtraTable(
            "joint_frailty", "Frailty variance (theta), association (alpha), log-likelihood"
        ),
        ExtraTable("baseline_hazards", "Baseline hazard jumps of both processes", "hidden"),
    )
    claim_metrics: ClassVar[tuple[str, ...]] = ("hazard_reduction",)
    reference: ClassVar[str] = "Liu, Wolfe and Huang (2004); Rondeau et al. (2007)"
    r_call: ClassVar[str] = (
        "frailtypack::frailtyPenal(Surv(start, stop, event) ~ cluster(participant_id) + arm + "
        "terminal(terminal), formula.terminalEvent = ~ arm, data = ..., recurrentAG = TRUE, "
        "hazard = 'Splines', n.knots = ..., kappa = ...) (frailtypack smooths the two baseline "
        "hazards; here they are nonparametric, so that with alpha = 1 it is coxph(Surv(start, "
        "stop, status) ~ x_rec + x_term + strata(type) + frailty(participant_id), ties = "
        "'breslow') on the episodes stacked with one terminal-event row per participant)"
    )

    def describe(self, spec: ModelSpec | None = None) -> ModelDescription:
        """As the class attributes, with the association's handling from the options and the
        model's own intercurrent-event strategies."""
        from dataclasses import replace

        desc = replace(super().describe(spec), strategies=STRATEGIES)
        alpha = (spec.options if spec else {}).get("alpha", "estimate")
        if alpha == "estimate":
            return desc
        return replace(
            desc, estimand=desc.estimand + f"; association alpha fixed at {float(alpha):g}"
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
            raise NotEstimable("no episodes: cannot fit the recurrent-event model", **counts)
        opts = spec.options
        status, source = terminal_status(df)
        X, names = design(spec.formula, df, intercept=False)
        rows = df.loc[X.index]
        counts = {"n_participants": int(rows[ID].nunique()), "n_events": int(rows["event"].sum())}
        ids = np.unique(rows[ID].to_numpy())
        alpha = opts.get("alpha", "estimate")
        theta = opts.get("theta")
        fit = joint_frailty_fit(
            X.to_numpy(),
            rows["start"].to_numpy(dtype=float),
            rows["stop"].to_numpy(dtype=float),
            rows["event"].to_numpy(),
            rows[ID].to_numpy(),
            status.reindex(ids).to_numpy(dtype=float),
            names=names,
            alpha=None if alpha == "estimate" else float(alpha),
            theta=None if theta is None else float(theta),
            nodes=int(opts.get("nodes", 64)),
            tol=float(opts.get("tol", 1e-10)),
            em_max=int(opts.get("em_max", 5000)),
        )
        coefs = np.concatenate([fit.beta, fit.gamma])
        if not np.all(np.isfinite(coefs)) or np.any(np.abs(coefs) > 20):
            raise NotEstimable(
                "the fit diverged (a coefficient beyond +-20 on the log scale: monotone "
                "likelihood)",
                **counts,
            )
        messages = [fit.message] if fit.message else []
        dropped = len(df) - len(rows)
        if dropped:
            messages.append(f"{dropped} rows with missing covariates")
        messages.append(f"terminal events: {fit.n_terminal} (from {source})")
        message = "; ".join(messages)
        terms = [*names, *[TERMINAL_PREFIX + nm for nm in names][: fit.gamma.size]]
        table = tidy(
            spec,
            terms,
            coefs,
            np.concatenate([fit.se_beta, fit.se_gamma]),
            robust=False,
            log_likelihood=fit.loglik,
            converged=fit.converged,
            message=message,
            **counts,
        )
        return ModelResult(table, _extras(fit, source), converged=fit.converged, message=message)


def _extras(fit: JointFrailtyFit, source: str) -> dict[str, pd.DataFrame]:
    params = pd.DataFrame(
        [
            ("theta", fit.theta, fit.se_theta, "frailty variance (gamma, mean 1)"),
            ("alpha", fit.alpha, fit.se_alpha, "terminal hazard ~ Z^alpha"),
            ("log_likelihood", fit.loglik, np.nan, "marginal, baselines profiled"),
            ("n_terminal_events", float(fit.n_terminal), np.nan, source),
            ("n_episodes", float(fit.n_events), np.nan, ""),
            ("n_participants", float(fit.n_participants), np.nan, ""),
            ("outer_iterations", float(fit.iterations), np.nan, "L-BFGS-B and Newton"),
            ("em_iterations", float(fit.em_iterations), np.nan, "over all profile evaluations"),
        ],
        columns=["quantity", "value", "std_error", "note"],
    )
    parts = [fit.recurrent_hazard.assign(process="recurrent")]
    if len(fit.terminal_hazard):
        parts.append(fit.terminal_hazard.assign(process="terminal"))
    hz = pd.concat(parts, ignore_index=True)[["process", "time", "jump"]]
    return {"joint_frailty": params, "baseline_hazards": hz}
