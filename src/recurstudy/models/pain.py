"""Linear mixed model of pain scores (NRS) over time by arm, matched to lme4::lmer (REML).

Model (R notation)::

    lmer(nrs ~ arm * factor(week) + (1 + weeks_scaled | participant_id), REML = TRUE)

- ``week``: the visit week, ``round(days since enrolment / 7)``, or, with the option
  ``visit_weeks: [0, 2, 4, ...]``, the nearest scheduled visit. It enters as a categorical fixed
  effect crossed with arm: the simulator's (and the study's) trajectory falls until week 6 and then
  plateaus, so a straight line in time would be misspecified; the saturated visit-by-arm means
  assume no shape at all.
- ``weeks_scaled``: continuous time, days / 7 / ``slope_scale`` (default 10 weeks per unit, for
  conditioning); it carries the participant-level random slope (random intercept and slope,
  unstructured 2 x 2 covariance).
- Further terms of the configured formula besides ``arm`` (participant covariates) are added as
  main effects; the model is not adjusted by default (``adjustable = False``): randomisation and
  the baseline visit inside the outcome make adjustment unnecessary.

Estimation: statsmodels ``MixedLM`` (REML, L-BFGS) gives the starting point; its variance
parameters are only converged to about 1e-5 relative, so they are polished by minimising lme4's
profiled REML criterion in lme4's own parametrisation (``theta``: the lower-triangular relative
Cholesky factor of the random-effects covariance) - Nelder-Mead, then Newton steps on
finite-difference derivatives. The fixed effects are then the GLS estimate and their covariance is
lme4's ``vcov``: ``sigma^2 (X' V^-1 X)^-1`` at the estimated variance parameters (conditional on
them, not statsmodels' joint-Hessian block). The log-likelihood is the REML log-likelihood
(``logLik(fit)`` of a REML lmer fit; ``-2 *`` it is lme4's REML criterion).

Extras:

- ``between_arm`` (the estimand a claim of "the intervention reduced pain by x%" is judged on):
  for each post-baseline visit ``w``, ``reduction = 1 - mean_I(w) / mean_C(w)``, the percent
  reduction of mean NRS in the intervention arm relative to the control arm, with the arm means,
  their difference, the ratio, Wald z 95% intervals on the log ratio (delta method), the p-value of
  no effect and the numbers of participants. Two methods (column ``method``):

  - ``cLDA`` (primary): constrained longitudinal data analysis (Liang and Zeger 2000; Lu 2010):
    ``lmer(nrs ~ factor(week) + trt_w2 + trt_w4 + ... + (1 + weeks_scaled | participant_id))``
    with ``trt_wk`` = 1 for an intervention participant's score at week k. Baseline is part of
    the outcome and its mean is common to both arms (randomisation); the arms differ only after
    baseline. The covariance is the pain model's own (random intercept and slope, REML), so one
    variance model serves the within- and between-arm numbers and the fit is lme4's; it needs 4
    variance parameters where an unstructured 6 x 6 covariance needs 21. Population: all
    randomised participants with any score; a missing visit is handled by the likelihood, valid
    under missing at random given the observed scores (and the covariance model). Variance:
    lme4's ``vcov`` given the variance parameters.
  - ``ANCOVA`` (sensitivity): ``lm(nrs_w ~ arm + nrs_0)`` on participants with both scores
    (complete cases at week w, valid when missingness is completely at random); ``mean_C`` is the
    control mean at the mean baseline of those participants, ``mean_I = mean_C + delta``.

- ``percent_change`` (descriptive: includes the control arm's own change): model-estimated mean
  NRS per arm and week - ``mean_nrs``, ``se_mean``, ``mean_conf_low/high`` - and the percent
  change from the baseline week, ``percent_change``, ``se_percent_change``, ``conf_low/high``
  (delta method, Wald z); rows ``row == "arm"`` (``interpretation`` says that they are
  descriptive), plus one ``row == "difference"`` row: intervention minus control percent change at
  the claim week, option ``week``, default 6.
- ``variance_components`` (lme4's VarCorr, theta, REML criterion) and ``clda_coefficients`` (the
  cLDA's fixed effects, REML criterion and theta).

Options: ``week``, ``visit_weeks``, ``slope_scale``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import ClassVar

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
    quietly,
    register,
    tidy,
)

optimize = lazy_import("scipy.optimize")
stats = lazy_import("scipy.stats")

ID = "participant_id"


# ---------------------------------------------------------------------------------------------
# Profiled REML criterion (lme4's parametrisation), vectorised over participants
# ---------------------------------------------------------------------------------------------


class _Crossprods:
    """Per-group cross-products of y, X and Z: all the REML criterion needs."""

    def __init__(self, y: np.ndarray, X: np.ndarray, Z: np.ndarray, groups: np.ndarray):
        codes, _ = pd.factorize(groups, sort=False)
        g = codes.max() + 1
        q, p = Z.shape[1], X.shape[1]
        self.n, self.p, self.q, self.g = y.size, p, q, g
        zz = np.einsum("ia,ib->iab", Z, Z)
        zx = np.einsum("ia,ib->iab", Z, X)
        zy = Z * y[:, None]
        self.ZZ = np.zeros((g, q, q))
        self.ZX = np.zeros((g, q, p))
        self.Zy = np.zeros((g, q))
        np.add.at(self.ZZ, codes, zz)
        np.add.at(self.ZX, codes, zx)
        np.add.at(self.Zy, codes, zy)
        self.XX = X.T @ X
        self.Xy = X.T @ y
        self.yy = float(y @ y)

    @staticmethod
    def lam(theta: np.ndarray) -> np.ndarray:
        return np.array([[theta[0], 0.0], [theta[1], theta[2]]])

    def solve(self, theta: np.ndarray):
        """GLS pieces at theta: (deviance, beta, sigma2, XtVinvX_rel, logdet_V_rel)."""
        L = self.lam(theta)
        # M_i = I + L' Z_i'Z_i L; V_i^-1 = I - Z_i L M_i^-1 L' Z_i' (relative scale).
        M = np.eye(self.q)[None] + np.matmul(np.matmul(L.T[None], self.ZZ), L[None])
        sign, logdet = np.linalg.slogdet(M)
        if np.any(sign <= 0):
            return np.inf, None, np.nan, None, np.nan
        Minv = np.linalg.inv(M)
        LZX = np.matmul(L.T[None], self.ZX)  # L' Z_i'X_i, (g, q, p)
        LZy = self.Zy @ L  # rows L' Z_i'y_i, (g, q)
        MX = np.matmul(Minv, LZX)
        My = np.matmul(Minv, LZy[:, :, None])[:, :, 0]
        flat = LZX.reshape(-1, self.p)
        XVX = self.XX - flat.T @ MX.reshape(-1, self.p)
        XVy = self.Xy - flat.T @ My.reshape(-1)
        yVy = self.yy - float(np.sum(LZy * My))
        try:
            C = np.linalg.cholesky(XVX)
        except np.linalg.LinAlgError:
            return np.inf, None, np.nan, None, np.nan
        beta = np.linalg.solve(XVX, XVy)
        r2 = yVy - beta @ XVy
        dof = self.n - self.p
        if not r2 > 0:
            return np.inf, None, np.nan, None, np.nan
        logdet_v = float(logdet.sum())
        dev = (
            logdet_v
            + 2.0 * np.sum(np.log(np.diag(C)))
            + dof * (1.0 + np.log(2.0 * np.pi * r2 / dof))
        )
        return float(dev), beta, r2 / dof, XVX, logdet_v

    def deviance(self, theta: np.ndarray) -> float:
        return self.solve(theta)[0]


def _fd_derivatives(f, t: np.ndarray, h_grad: float = 1e-5, h_hess: float = 1e-3):
    """Central finite-difference gradient and Hessian of f at t."""
    k = t.size
    f0 = f(t)
    g = np.empty(k)
    H = np.empty((k, k))
    eye = np.eye(k)
    for i in range(k):
        g[i] = (f(t + h_grad * eye[i]) - f(t - h_grad * eye[i])) / (2 * h_grad)
        ei = h_hess * eye[i]
        H[i, i] = (f(t + ei) - 2 * f0 + f(t - ei)) / h_hess**2
        for j in range(i):
            ej = h_hess * eye[j]
            H[i, j] = H[j, i] = (
                f(t + ei + ej) - f(t + ei - ej) - f(t - ei + ej) + f(t - ei - ej)
            ) / (4 * h_hess**2)
    return g, H


def _polish(cp: _Crossprods, theta0: np.ndarray, rough: bool) -> tuple[np.ndarray, float, float]:
    """Minimise the REML criterion from theta0 by Newton steps on finite-difference derivatives.

    With `rough` (no usable statsmodels start) a bounded L-BFGS-B run comes first. Returns theta,
    the criterion and the largest absolute gradient (finite differences, step 1e-5; its noise
    floor is about 1e-7 for criteria of order 1e4).
    """
    f = cp.deviance
    theta, dev = np.asarray(theta0, float), f(theta0)
    if rough or not np.isfinite(dev):
        opt = optimize.minimize(
            f,
            theta,
            method="L-BFGS-B",
            bounds=[(0.0, None), (None, None), (0.0, None)],
            options={"maxiter": 2000},
        )
        if np.isfinite(opt.fun) and (not np.isfinite(dev) or opt.fun < dev):
            theta, dev = opt.x, float(opt.fun)
    g, H = _fd_derivatives(f, theta)
    for _ in range(30):
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)) or np.any(np.linalg.eigvalsh(H) <= 0):
            step = g * 1e-3  # not locally convex: a small gradient step
        t, improved = 1.0, False
        while t > 1e-8:
            cand = theta - t * step
            d = f(cand)
            if np.isfinite(d) and d <= dev:
                improved = True
                break
            t /= 2
        if not improved:
            break
        moved = float(np.max(np.abs(cand - theta)))
        theta, dev = cand, d
        g, H = _fd_derivatives(f, theta)
        if moved < 1e-10:
            break
    # Lambda's columns are identified up to sign: report a non-negative diagonal, as lme4.
    if theta[0] < 0:
        theta = theta * np.array([-1.0, -1.0, 1.0])
    if theta[2] < 0:
        theta = theta * np.array([1.0, 1.0, -1.0])
    return theta, f(theta), float(np.max(np.abs(g)))


@dataclass
class _RemlFit:
    """A converged (or best-effort) REML fit in lme4's parametrisation."""

    theta: np.ndarray
    dev: float  # lme4's REML criterion, -2 * REML log-likelihood
    beta: np.ndarray
    sigma2: float
    vcov: np.ndarray  # sigma^2 (X' V^-1 X)^-1, lme4's vcov
    gmax: float  # largest |finite-difference gradient| of the criterion at theta
    sm_llf: float  # statsmodels' REML log-likelihood at its own (starting) optimum
    converged: bool
    problems: list[str]


def _fit_reml(y: np.ndarray, X: np.ndarray, Z: np.ndarray, groups: np.ndarray) -> _RemlFit | str:
    """REML fit of ``y = X beta + Z b + e`` (random intercept and slope per group), as lmer.

    statsmodels' MixedLM gives the start; :func:`_polish` minimises lme4's profiled criterion.
    Returns a message instead when no fixed-effect estimate can be formed.
    """
    problems: list[str] = []
    theta0 = np.array([1.0, 0.0, 0.5])
    rough = True
    sm_llf = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            from statsmodels.regression.mixed_linear_model import MixedLM

            res = MixedLM(y, X, groups=groups, exog_re=Z).fit(
                reml=True, method=["lbfgs"], maxiter=2000
            )
            T = np.asarray(res.cov_re) / res.scale
            Lc = np.linalg.cholesky(T + 1e-12 * np.eye(2))
            theta_sm = np.array([Lc[0, 0], Lc[1, 0], Lc[1, 1]])
            if np.all(np.isfinite(theta_sm)):
                theta0, rough = theta_sm, False
            sm_llf = float(res.llf)
        except Exception as exc:  # statsmodels failing is not fatal: polish from a default
            problems.append(f"statsmodels MixedLM: {exc}")
    sm_warn = _warning_messages(caught)
    try:
        cp = _Crossprods(y, X, Z, groups)
        theta, dev, gmax = _polish(cp, theta0, rough)
        dev, beta, sigma2, XVX, _ = cp.solve(theta)
    except Exception as exc:
        return f"REML optimisation failed: {exc}"
    converged = bool(
        np.isfinite(dev) and beta is not None and gmax < 1e-4 * max(1.0, abs(dev) / 1e3)
    )
    if not converged:
        problems += sm_warn
        problems.append(f"REML criterion not at a minimum (max |gradient| {gmax:.2g})")
        if beta is None:
            return "; ".join(problems)
    vcov = sigma2 * np.linalg.inv(XVX)
    return _RemlFit(theta, dev, beta, sigma2, vcov, gmax, sm_llf, converged, problems)


# ---------------------------------------------------------------------------------------------
# Data preparation
# ---------------------------------------------------------------------------------------------


def _extra_terms(formula: str) -> list[str]:
    rhs = formula.split("~", 1)[-1]
    terms = [t.strip() for t in re.split(r"\+", rhs) if t.strip()]
    return [t for t in terms if t not in ("arm", "1")]


def _prepare(spec: ModelSpec, pain: pd.DataFrame | None, participants: pd.DataFrame | None):
    if pain is None or participants is None or len(pain) == 0:
        return "no pain scores"
    need_p = {ID, "arm", "enrolled_on"}
    need_s = {ID, "assessed_on", "nrs"}
    if not need_p <= set(participants.columns) or not need_s <= set(pain.columns):
        return (
            "pain_scores needs participant_id, assessed_on, nrs;"
            " participants needs participant_id, arm, enrolled_on"
        )
    extra = _extra_terms(spec.formula)
    keep_cols = [c for c in participants.columns if c not in ("assessed_on", "nrs")]
    df = pain[[ID, "assessed_on", "nrs"]].merge(
        participants[keep_cols], on=ID, how="inner", validate="m:1"
    )
    df["arm"] = pd.Categorical(
        df["arm"].astype(str), categories=[spec.arms["control"], spec.arms["intervention"]]
    )
    assessed = pd.to_datetime(df["assessed_on"])
    enrolled = pd.to_datetime(df["enrolled_on"])
    days = ((assessed - enrolled) / np.timedelta64(1, "D")).to_numpy(dtype=float)
    df["nrs"] = pd.to_numeric(df["nrs"], errors="coerce")
    ok = np.isfinite(days) & df["nrs"].notna().to_numpy() & df["arm"].notna().to_numpy()
    ok &= days >= 0
    df, days = df.loc[ok].copy(), days[ok]
    visits = spec.options.get("visit_weeks")
    if visits:
        v = np.asarray(sorted(visits), dtype=float)
        week = v[np.argmin(np.abs(days[:, None] / 7.0 - v[None, :]), axis=1)]
    else:
        week = np.round(days / 7.0)
    df["week"] = week.astype(np.int64)
    df["weeks_scaled"] = days / 7.0 / float(spec.options.get("slope_scale", 10.0))
    df = df.sort_values([ID, "assessed_on"], kind="mergesort").reset_index(drop=True)
    rhs = " + ".join(["arm * C(week)", *extra])
    return df, rhs


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


def _contrast(names: list[str], arm_term: str, week: int, base_week: int, intervention: bool):
    v = np.zeros(len(names))
    v[names.index("Intercept")] = 1.0
    if intervention:
        v[names.index(arm_term)] = 1.0
    if week != base_week:
        v[names.index(f"C(week)[T.{week}]")] = 1.0
        if intervention:
            v[names.index(f"{arm_term}:C(week)[T.{week}]")] = 1.0
    return v


def percent_change_table(
    spec: ModelSpec,
    names: list[str],
    beta: np.ndarray,
    vcov: np.ndarray,
    weeks: list[int],
    data: pd.DataFrame,
    claim_week: int,
    covariate_means: np.ndarray | None = None,
) -> pd.DataFrame:
    """Mean NRS per arm and week, % change from the first week (delta method), and the difference.

    pct = 100 (m_w / m_0 - 1), gradient 100 (L_w / m_0 - m_w L_0 / m_0^2); the difference row is
    pct(intervention, claim week) - pct(control, claim week) with the difference of the gradients.
    Covariate terms (adjusted variants) are set to their means.
    """
    z = stats.norm.ppf(0.5 + spec.conf_level / 2.0)
    term = spec.intervention_term
    base = weeks[0]
    rows, grads = [], {}
    for label, is_int in ((spec.arms["control"], False), (spec.arms["intervention"], True)):
        l0 = _contrast(names, term, base, base, is_int)
        if covariate_means is not None:
            l0 = l0 + covariate_means
        m0 = float(l0 @ beta)
        sub = data[data["arm"].astype(str) == label]
        for w in weeks:
            lw = _contrast(names, term, w, base, is_int)
            if covariate_means is not None:
                lw = lw + covariate_means
            mw = float(lw @ beta)
            se_m = float(np.sqrt(lw @ vcov @ lw))
            with np.errstate(divide="ignore", invalid="ignore"):
                pc = 100.0 * (mw / m0 - 1.0)
                g = 100.0 * (lw / m0 - mw * l0 / m0**2)
            se_pc = float(np.sqrt(g @ vcov @ g))
            grads[(label, w)] = (pc, g)
            at = sub[sub["week"] == w]
            rows.append(
                {
                    "model": spec.name,
                    "row": "arm",
                    "arm": label,
                    "week": int(w),
                    "mean_nrs": mw,
                    "se_mean": se_m,
                    "mean_conf_low": mw - z * se_m,
                    "mean_conf_high": mw + z * se_m,
                    "percent_change": pc,
                    "se_percent_change": se_pc,
                    "conf_low": pc - z * se_pc,
                    "conf_high": pc + z * se_pc,
                    "p_value": np.nan if w == base else float(2 * stats.norm.sf(abs(pc / se_pc))),
                    "n_participants": int(at[ID].nunique()),
                    "n_observations": int(len(at)),
                    "baseline_week": int(base),
                }
            )
    ci, cc = (spec.arms["intervention"], claim_week), (spec.arms["control"], claim_week)
    if ci in grads and cc in grads:
        d = grads[ci][0] - grads[cc][0]
        gd = grads[ci][1] - grads[cc][1]
        se_d = float(np.sqrt(gd @ vcov @ gd))
        rows.append(
            {
                "model": spec.name,
                "row": "difference",
                "arm": f"{spec.arms['intervention']} - {spec.arms['control']}",
                "week": int(claim_week),
                "mean_nrs": np.nan,
                "se_mean": np.nan,
                "mean_conf_low": np.nan,
                "mean_conf_high": np.nan,
                "percent_change": d,
                "se_percent_change": se_d,
                "conf_low": d - z * se_d,
                "conf_high": d + z * se_d,
                "p_value": float(2 * stats.norm.sf(abs(d / se_d))),
                "n_participants": int(data.loc[data["week"] == claim_week, ID].nunique()),
                "n_observations": int((data["week"] == claim_week).sum()),
                "baseline_week": int(base),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Between-arm contrast: cLDA (primary) and ANCOVA (sensitivity)
# ---------------------------------------------------------------------------------------------

WITHIN_ARM_NOTE = "descriptive: includes the control arm's own change"
CLDA_ESTIMAND = (
    "1 - mean_I(w) / mean_C(w): ratio of mean NRS at week w, intervention vs control, all "
    "randomised participants with a score; cLDA (common baseline mean), REML; missing visits MAR"
)
ANCOVA_ESTIMAND = (
    "1 - mean_I(w) / mean_C(w) from lm(nrs_w ~ arm + nrs_0) at the mean baseline; complete cases "
    "at baseline and week w (missing completely at random)"
)


def ratio_contrast(
    beta: np.ndarray, vcov: np.ndarray, l_control: np.ndarray, l_intervention: np.ndarray, z: float
) -> dict[str, float]:
    """Ratio of two linear combinations of ``beta``, ``m_I / m_C``, by the delta method.

    The interval is Wald z on the log ratio, ``log(m_I / m_C) +/- z se``, with
    ``se^2 = g' V g`` and ``g = L_I / m_I - L_C / m_C``; the reduction ``1 - ratio`` gets the
    interval ``1 - exp(upper) .. 1 - exp(lower)`` and the standard error ``ratio * se``. The
    p-value is the Wald z test of ``log ratio = 0`` (no effect). The difference ``m_I - m_C``
    and the two means come with their model-based standard errors.
    """
    lc, li = np.asarray(l_control, float), np.asarray(l_intervention, float)
    mc, mi = float(lc @ beta), float(li @ beta)
    out: dict[str, float] = {
        "mean_control": mc,
        "se_mean_control": float(np.sqrt(lc @ vcov @ lc)),
        "mean_intervention": mi,
        "se_mean_intervention": float(np.sqrt(li @ vcov @ li)),
    }
    ld = li - lc
    out["difference"] = mi - mc
    out["se_difference"] = float(np.sqrt(ld @ vcov @ ld))
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = mc > 0 and mi > 0
        log_ratio = float(np.log(mi / mc)) if ok else np.nan
        g = li / mi - lc / mc
        se = float(np.sqrt(g @ vcov @ g)) if ok else np.nan
        ratio = float(np.exp(log_ratio))
        lo, hi = float(np.exp(log_ratio - z * se)), float(np.exp(log_ratio + z * se))
        stat = log_ratio / se
    out.update(
        ratio=ratio,
        ratio_conf_low=lo,
        ratio_conf_high=hi,
        reduction=1.0 - ratio,
        std_error=ratio * se,
        conf_low=1.0 - hi,
        conf_high=1.0 - lo,
        log_ratio=log_ratio,
        se_log_ratio=se,
        statistic=stat,
        p_value=float(2.0 * stats.norm.sf(abs(stat))) if np.isfinite(stat) else np.nan,
    )
    return out


def clda_design(
    df: pd.DataFrame, weeks: list[int], intervention: str, extra: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The cLDA fixed effects: visit means shared by both arms, plus an intervention effect at
    each post-baseline visit (``trt_w<week>``); no arm term at baseline. Returns the rows kept
    (covariates with missing values drop them), the design matrix and its column names."""
    d = df.copy()
    is_int = (d["arm"].astype(str) == intervention).to_numpy()
    cols = []
    for w in weeks[1:]:
        col = f"trt_w{int(w)}"
        d[col] = (is_int & (d["week"].to_numpy() == w)).astype(float)
        cols.append(col)
    rhs = " + ".join(["C(week)", *cols, *extra])
    X, names = design(rhs, d, intercept=True)
    return d.loc[X.index], X, names


def _clda_vectors(
    names: list[str], week: int, base: int, cov_means: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    lc = cov_means.copy()
    lc[names.index("Intercept")] = 1.0
    if week != base:
        lc[names.index(f"C(week)[T.{week}]")] = 1.0
    li = lc.copy()
    if week != base:
        li[names.index(f"trt_w{week}")] = 1.0
    return lc, li


def _covariate_means(names: list[str], X: np.ndarray, design_cols: set[str]) -> np.ndarray:
    """Covariate columns at their sample means; design columns (arm, visit) at 0."""
    return np.array(
        [0.0 if n in design_cols else float(X[:, i].mean()) for i, n in enumerate(names)]
    )


def clda_between_arm(
    spec: ModelSpec, df: pd.DataFrame, weeks: list[int], extra: list[str], claim_week: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Between-arm ratio of mean NRS at each post-baseline visit from a cLDA.

    Constrained longitudinal data analysis (Liang and Zeger 2000): all visits, baseline
    included, are the outcome; both arms share the baseline mean (randomisation), the
    intervention effect enters only after baseline (one coefficient per visit), and the
    covariance is the pain model's: random intercept and slope per participant (REML, lme4's
    ``lmer``). Estimand: ``1 - mean_I(w) / mean_C(w)``, the ratio of the arms' mean NRS at week
    ``w`` among all randomised participants with any score; a missing visit is treated as
    missing at random given the scores observed (likelihood-based). Interval: Wald z on the log
    ratio (delta method, lme4's ``vcov``, conditional on the variance parameters). Covariate
    terms, if configured, are evaluated at their means. Returns the rows and the fixed effects.
    """
    intervention = spec.arms["intervention"]
    base = weeks[0]
    z = float(stats.norm.ppf(0.5 + spec.conf_level / 2.0))
    d, Xdf, names = clda_design(df, weeks, intervention, extra)
    X = Xdf.to_numpy()
    y = d["nrs"].to_numpy(dtype=float)
    Z = np.column_stack([np.ones(len(d)), d["weeks_scaled"].to_numpy()])
    groups = d[ID].to_numpy()
    message = ""
    fit: _RemlFit | str
    if np.linalg.matrix_rank(X) < X.shape[1]:
        fit = "the cLDA design is rank deficient"
    else:
        fit = _fit_reml(y, X, Z, groups)
    if isinstance(fit, str):
        beta = np.full(len(names), np.nan)
        vcov = np.full((len(names), len(names)), np.nan)
        converged, message = False, fit
    else:
        beta, vcov, converged = fit.beta, fit.vcov, fit.converged
        message = "; ".join(fit.problems)
    design_cols = {"Intercept", *(n for n in names if n.startswith(("C(week)", "trt_w")))}
    cov_means = _covariate_means(names, X, design_cols)
    is_int = d["arm"].astype(str) == intervention
    rows = []
    for w in weeks[1:]:
        lc, li = _clda_vectors(names, int(w), base, cov_means)
        at = d["week"] == w
        rows.append(
            {
                "model": spec.name,
                "method": "cLDA",
                "week": int(w),
                **ratio_contrast(beta, vcov, lc, li, z),
                "n_control": int(d.loc[at & ~is_int, ID].nunique()),
                "n_intervention": int(d.loc[at & is_int, ID].nunique()),
                "n": int(pd.unique(groups).size),
                "claim_week": bool(w == claim_week),
                "baseline_week": int(base),
                "baseline_mean": float(_clda_vectors(names, base, base, cov_means)[0] @ beta),
                "covariance": "random intercept and slope per participant (REML)",
                "interval": "Wald z on the log ratio (delta method)",
                "estimand": CLDA_ESTIMAND,
                "converged": bool(converged),
                "message": message,
            }
        )
    se = np.sqrt(np.diag(vcov))
    coefs = pd.DataFrame({"model": spec.name, "term": names, "estimate": beta, "std_error": se})
    if not isinstance(fit, str):
        coefs["reml_criterion"] = fit.dev
        coefs["theta"] = ",".join(f"{t:.12g}" for t in fit.theta)
        coefs["sigma2"] = fit.sigma2
        coefs["converged"] = fit.converged
    return pd.DataFrame(rows), coefs


def ancova_wide(df: pd.DataFrame, base: int, week: int) -> pd.DataFrame:
    """One row per participant with a score at baseline and at ``week`` (complete cases): arm,
    participant columns, ``nrs_0`` (baseline) and ``nrs_w``. With two assessments at one visit
    the earliest counts."""
    first = df.sort_values([ID, "assessed_on"], kind="mergesort").drop_duplicates([ID, "week"])
    b = first.loc[first["week"] == base].set_index(ID)
    w = first.loc[first["week"] == week].set_index(ID)
    keep = b.index.intersection(w.index, sort=False)
    out = w.loc[keep].drop(columns=["nrs", "week", "weeks_scaled", "assessed_on"])
    out["nrs_0"] = b.loc[keep, "nrs"].astype(float)
    out["nrs_w"] = w.loc[keep, "nrs"].astype(float)
    return out.reset_index()


def ancova_between_arm(
    spec: ModelSpec, df: pd.DataFrame, weeks: list[int], extra: list[str], claim_week: int
) -> pd.DataFrame:
    """Sensitivity: ANCOVA of the week-w score on arm and baseline NRS, ``lm(nrs_w ~ arm +
    nrs_0)``, per post-baseline visit.

    Population: participants with a score at baseline and at week w (complete cases, valid under
    missing completely at random). Estimand: ``1 - (m_C + delta) / m_C`` with ``delta`` the arm
    coefficient and ``m_C = b_0 + b_base * mean(nrs_0)`` the control mean at the mean baseline
    of the analysed participants (treated as fixed); under randomisation the same marginal ratio
    as the cLDA. Variance: OLS ``s^2 (X'X)^-1`` (lm's ``vcov``); interval Wald z on the log ratio
    (delta method). Covariate terms, if configured, are added and evaluated at their means.
    """
    intervention = spec.arms["intervention"]
    term = spec.intervention_term
    base = weeks[0]
    z = float(stats.norm.ppf(0.5 + spec.conf_level / 2.0))
    rows = []
    for w in weeks[1:]:
        wide = ancova_wide(df, base, int(w))
        row: dict = {"model": spec.name, "method": "ANCOVA", "week": int(w)}
        message = ""
        try:
            Xdf, names = design(" + ".join(["arm", "nrs_0", *extra]), wide, intercept=True)
            X = Xdf.to_numpy()
            yv = wide.loc[Xdf.index, "nrs_w"].to_numpy(dtype=float)
            n, k = X.shape
            if term not in names or n <= k or np.linalg.matrix_rank(X) < k:
                raise ValueError("too few complete cases or one arm only")
            q, r = np.linalg.qr(X)
            beta = np.linalg.solve(r, q.T @ yv)
            resid = yv - X @ beta
            rinv = np.linalg.inv(r)
            vcov = float(resid @ resid) / (n - k) * (rinv @ rinv.T)
            cols = {"Intercept", term}
            cm = np.array(
                [0.0 if nm in cols else float(X[:, i].mean()) for i, nm in enumerate(names)]
            )
            lc = cm.copy()
            lc[names.index("Intercept")] = 1.0
            li = lc.copy()
            li[names.index(term)] = 1.0
            row.update(ratio_contrast(beta, vcov, lc, li, z))
            is_int = (wide.loc[Xdf.index, "arm"].astype(str) == intervention).to_numpy()
            row.update(n_control=int((~is_int).sum()), n_intervention=int(is_int.sum()), n=n)
            row["baseline_mean"] = float(X[:, names.index("nrs_0")].mean())
            converged = True
        except (ValueError, np.linalg.LinAlgError) as exc:
            converged, message = False, f"ANCOVA at week {w}: {exc}"
        row.update(
            claim_week=bool(w == claim_week),
            baseline_week=int(base),
            covariance="independent residuals, OLS",
            interval="Wald z on the log ratio (delta method)",
            estimand=ANCOVA_ESTIMAND,
            converged=converged,
            message=message,
        )
        rows.append(row)
    return pd.DataFrame(rows)


BETWEEN_ARM_COLUMNS = [
    "model",
    "method",
    "week",
    "mean_control",
    "se_mean_control",
    "mean_intervention",
    "se_mean_intervention",
    "difference",
    "se_difference",
    "ratio",
    "ratio_conf_low",
    "ratio_conf_high",
    "reduction",
    "std_error",
    "conf_low",
    "conf_high",
    "log_ratio",
    "se_log_ratio",
    "statistic",
    "p_value",
    "n_control",
    "n_intervention",
    "n",
    "claim_week",
    "baseline_week",
    "baseline_mean",
    "covariance",
    "interval",
    "estimand",
    "converged",
    "message",
]


@dataclass(frozen=True)
class PainOptions:
    """Options of the pain mixed model."""

    week: int = option(6, minimum=0, doc="the week of the percent-change estimate")
    visit_weeks: list[int] | None = option(
        None, doc="scheduled visit weeks; an assessment counts at the nearest one"
    )
    slope_scale: float = option(
        10.0, minimum=0.0, exclusive_minimum=True, doc="weeks per unit of the random slope"
    )


@register
class PainMixedModel(Model):
    """REML linear mixed model of NRS: arm x visit week, random intercept and slope (lme4)."""

    kind = "mixed_pain"
    datasets = ("pain_scores", "participants")
    adjustable = False
    Options: ClassVar[type] = PainOptions
    group: ClassVar[str] = "mean difference"
    title: ClassVar[str] = "Linear mixed model of pain scores"
    effect_measure: ClassVar[str | None] = "mean difference"
    ratio: ClassVar[bool] = False
    estimand: ClassVar[str] = (
        "mean NRS pain by arm and visit week (REML, random intercept and slope per "
        "participant); between arms, 1 - mean_I(w) / mean_C(w) at each visit (cLDA, ANCOVA as "
        "sensitivity); within arm (descriptive), the percent change from baseline"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = (
        ExtraTable(
            "between_arm",
            "Between-arm reduction of mean NRS, 1 - intervention / control mean, per visit: "
            "cLDA (common baseline, all visits, missing visits MAR) and baseline-adjusted ANCOVA "
            "(complete cases); Wald 95% intervals on the log ratio",
        ),
        ExtraTable(
            "percent_change",
            "Model-based means and percent change from baseline within each arm (descriptive: "
            "includes the control arm's own change)",
        ),
        ExtraTable("variance_components", "Variance components", "appendix"),
        ExtraTable("clda_coefficients", "cLDA fixed effects (REML)", "appendix"),
    )
    claim_metrics: ClassVar[tuple[str, ...]] = ("pain_reduction",)
    reference: ClassVar[str] = "Laird and Ware (1982); Bates et al. (2015)"
    r_call: ClassVar[str] = (
        "lme4::lmer(nrs ~ arm * factor(week) + (1 + weeks_scaled | participant_id), REML = TRUE)"
    )

    def fit(self, spec: ModelSpec, **data: pd.DataFrame) -> ModelResult:
        return quietly(self._fit, spec, data)

    def _fit(self, spec: ModelSpec, **data: pd.DataFrame) -> ModelResult:
        prepared = _prepare(spec, data.get("pain_scores"), data.get("participants"))
        if isinstance(prepared, str):
            raise NotEstimable(prepared)
        df, rhs = prepared
        n_ids = int(df[ID].nunique()) if len(df) else 0
        counts_kw = dict(n_participants=n_ids, n_events=len(df))
        if len(df) == 0:
            raise NotEstimable("no pain scores after joining with participants", **counts_kw)
        if df["arm"].astype(str).nunique() < 2:
            raise NotEstimable("pain scores from only one arm", **counts_kw)
        weeks = sorted(df["week"].unique().tolist())
        if len(weeks) < 2:
            raise NotEstimable("pain scores at a single visit week", **counts_kw)
        per_cell = df.groupby(["arm", "week"], observed=False).size()
        if (per_cell == 0).any():
            empty = [f"{a} week {w}" for (a, w), k in per_cell.items() if k == 0]
            raise NotEstimable(f"no pain scores for {', '.join(empty)}", **counts_kw)
        try:
            Xdf, names = design(rhs, df, intercept=True)
        except Exception as exc:
            raise NotEstimable(f"cannot build the design matrix: {exc}", **counts_kw) from exc
        df = df.loc[Xdf.index]
        X = Xdf.to_numpy()
        if np.linalg.matrix_rank(X) < X.shape[1]:
            raise NotEstimable("the fixed-effects design is rank deficient", **counts_kw)
        y = df["nrs"].to_numpy(dtype=float)
        Z = np.column_stack([np.ones(len(df)), df["weeks_scaled"].to_numpy()])
        groups = df[ID].to_numpy()
        n_ids = int(pd.unique(groups).size)
        counts_kw = dict(n_participants=n_ids, n_events=len(df))
        claim_week = int(spec.options.get("week", 6))

        fit = _fit_reml(y, X, Z, groups)
        if isinstance(fit, str):
            raise NotEstimable(fit, **counts_kw)
        theta, dev, beta, sigma2 = fit.theta, fit.dev, fit.beta, fit.sigma2
        gmax, sm_llf, converged, problems = fit.gmax, fit.sm_llf, fit.converged, fit.problems
        vcov = fit.vcov
        se = np.sqrt(np.diag(vcov))
        llf = -0.5 * dev
        boundary = ""
        if min(abs(theta[0]), abs(theta[2])) < 1e-4:
            boundary = "random-effects covariance at its boundary (singular fit)"
        message = "; ".join(p for p in [boundary, *problems] if p)
        table = tidy(
            spec,
            names,
            beta,
            se,
            robust=False,
            log_likelihood=llf,
            converged=converged,
            message=message,
            **counts_kw,
        )
        # A linear model's coefficients are differences in NRS points: no exp scale.
        table[["exp_estimate", "exp_conf_low", "exp_conf_high"]] = np.nan
        cov_means = None
        if len(names) > 2 * len(weeks):  # covariates: evaluate the means at their averages
            base_cols = {"Intercept", spec.intervention_term}
            pat = re.compile(r"C\(week\)")
            cov_means = np.array(
                [
                    0.0 if (n in base_cols or pat.search(n)) else float(X[:, i].mean())
                    for i, n in enumerate(names)
                ]
            )
        pct = percent_change_table(spec, names, beta, vcov, weeks, df, claim_week, cov_means)
        if claim_week not in weeks:
            message = "; ".join(
                p for p in [message, f"claim week {claim_week} is not a visit week {weeks}"] if p
            )
            table["message"] = message
        pct["interpretation"] = np.where(pct["row"] == "arm", WITHIN_ARM_NOTE, "")
        if weeks[0] != 0:
            pct["note"] = f"baseline is week {weeks[0]}, the earliest visit"
        Lam = _Crossprods.lam(theta)
        G = sigma2 * Lam @ Lam.T
        vc = pd.DataFrame(
            [
                {
                    "model": spec.name,
                    "component": "participant",
                    "term": "(Intercept)",
                    "variance": G[0, 0],
                    "sd": np.sqrt(G[0, 0]),
                    "correlation": np.nan,
                },
                {
                    "model": spec.name,
                    "component": "participant",
                    "term": "weeks_scaled",
                    "variance": G[1, 1],
                    "sd": np.sqrt(G[1, 1]),
                    "correlation": np.nan,
                },
                {
                    "model": spec.name,
                    "component": "participant",
                    "term": "(Intercept):weeks_scaled",
                    "variance": G[0, 1],
                    "sd": np.nan,
                    "correlation": G[0, 1] / np.sqrt(G[0, 0] * G[1, 1]),
                },
                {
                    "model": spec.name,
                    "component": "residual",
                    "term": "sigma2",
                    "variance": sigma2,
                    "sd": np.sqrt(sigma2),
                    "correlation": np.nan,
                },
            ]
        )
        vc["reml_criterion"] = dev
        vc["theta"] = ",".join(f"{t:.12g}" for t in theta)
        vc["slope_scale_weeks"] = float(spec.options.get("slope_scale", 10.0))
        vc["log_likelihood_statsmodels"] = sm_llf
        vc["max_abs_gradient"] = gmax
        extra = _extra_terms(spec.formula)
        clda, clda_coefs = clda_between_arm(spec, df, weeks, extra, claim_week)
        ancova = ancova_between_arm(spec, df, weeks, extra, claim_week)
        between = pd.concat([clda, ancova], ignore_index=True).reindex(columns=BETWEEN_ARM_COLUMNS)
        extras = {
            "percent_change": pct,
            "variance_components": vc,
            "between_arm": between,
            "clda_coefficients": clda_coefs,
        }
        return ModelResult(table, extras, converged=converged, message=message)


def _warning_messages(caught) -> list[str]:
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, HessianInversionWarning

    out = []
    for w in caught:
        if issubclass(w.category, (ConvergenceWarning, HessianInversionWarning)):
            msg = f"{w.category.__name__}: {str(w.message).splitlines()[0]}"
            if msg not in out:
                out.append(msg)
    return out
