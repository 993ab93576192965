"""Count models of episodes per participant: Poisson, negative binomial (NB2) and ZINB.

All three model ``n_episodes`` with the offset ``log(exposure_days)``, so ``exp(estimate)`` of
``arm[T.intervention]`` is the rate ratio. Participants with ``exposure_days <= 0`` (or missing)
contribute nothing and are dropped before fitting (never ``log(0)``); the ``sample`` extra and the
message say how many. The conventions follow R, against which they are tested
(tests/fixtures/counts, R 4.2.2):

``poisson``  ``glm(n ~ x + offset(log(exposure)), family = poisson)``. The tidy table reports the
             plain sandwich, ``sandwich::vcovHC(fit, type = "HC0")`` (robust = True): episodes are
             overdispersed, and HC0 keeps the rate-ratio interval valid whatever the variance
             function, with no small-sample factor (as the Cox models' robust errors). Extras:
             ``naive`` (model-based errors), ``hc1`` (HC0 * n / (n - p)), ``overdispersion``
             (Pearson chi2/df and AER::dispersiontest's Cameron-Trivedi tests).
``negbin``   ``MASS::glm.nb``: NB2, Var = mu + mu^2 / theta, theta by maximum likelihood
             (statsmodels' discrete NegativeBinomial, alpha = 1 / theta). Coefficient errors are
             glm.nb's: the GLM (expected) information at the final theta, theta held fixed, i.e.
             ``inv(X' diag(mu / (1 + alpha mu)) X)`` - not statsmodels' joint observed Hessian.
             SE(theta) is MASS::theta.ml's. Extras: ``dispersion``, ``lr_test`` (NB vs Poisson,
             half chi-square p-value, = pscl::odTest), ``robust`` (sandwich HC0 at fixed theta).
``zinb``     ``pscl::zeroinfl(n ~ x + offset(log(exposure)) | z, dist = "negbin")``. Fitted with
             statsmodels' ZeroInflatedNegativeBinomialP (p = 2, BFGS then Newton), polished with
             Newton steps on the analytic score in pscl's parametrisation (beta, gamma,
             log theta); the covariance is the inverse of the Hessian obtained, as pscl does, by
             central differences of the analytic gradient (step ``hessian_step``; pscl's optim
             uses 1e-3, the default here is 1e-5, which is closer to the exact Hessian). Zero-
             inflation terms are prefixed ``zero_``. Extras: ``dispersion``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
from recurstudy.models.variance import sandwich

special = lazy_import("scipy.special")
stats = lazy_import("scipy.stats")

ID = "participant_id"
Y = "n_episodes"
EXPOSURE = "exposure_days"


# ---------------------------------------------------------------------------------------------
# Shared preparation
# ---------------------------------------------------------------------------------------------


class _Prepared:
    """The analysed rows: response, log exposure, design matrix and what was dropped."""

    def __init__(self, df, X, names, y, offset, n_input, n_zero_exposure, n_missing):
        self.df = df
        self.X = X
        self.names = names
        self.y = y
        self.offset = offset
        self.n_input = n_input
        self.n_zero_exposure = n_zero_exposure
        self.n_missing = n_missing

    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def collapsed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(X, y, offset, frequency) of the distinct analysed rows, in sorted order.

        Participants with the same response, exposure and design row contribute identical
        likelihood terms, so a GLM on the distinct rows with frequency weights has exactly the
        same estimates, information and log-likelihood (only the summation order differs). At
        registry scale this is what makes the count models fast: a crude model on 1M
        participants has a few thousand distinct rows. Computed once, on first use.
        """
        if getattr(self, "_collapsed", None) is None:
            rows = np.column_stack([self.y, self.offset, self.X])
            # The distinct rows in lexicographic order, as np.unique(rows, axis=0) gives them,
            # by a lexsort of the columns: np.unique compares whole rows as opaque records and
            # took 2.0 s on 630k participants where this takes 0.25 s.
            order = np.lexsort(rows.T[::-1])
            rows = rows[order]
            first = np.ones(len(rows), dtype=bool)
            np.any(rows[1:] != rows[:-1], axis=1, out=first[1:])
            starts = np.flatnonzero(first)
            uniq = rows[starts]
            freq = np.diff(np.append(starts, len(rows)))
            if len(uniq) * 2 > len(rows):  # little to gain: keep the rows, weight 1
                self._collapsed = (self.X, self.y, self.offset, np.ones(self.n))
            else:
                self._collapsed = (uniq[:, 2:], uniq[:, 0], uniq[:, 1], freq.astype(float))
        return self._collapsed

    @property
    def n_events(self) -> int:
        return int(self.y.sum())

    @property
    def counts_kw(self) -> dict[str, int]:
        """The sample counts every result row carries."""
        return dict(n_participants=self.n, n_events=self.n_events)

    def dropped_message(self) -> str:
        parts = []
        if self.n_zero_exposure:
            parts.append(f"{self.n_zero_exposure} participant(s) with zero exposure dropped")
        if self.n_missing:
            parts.append(f"{self.n_missing} participant(s) with missing values dropped")
        return "; ".join(parts)

    def sample_table(self, spec: ModelSpec) -> pd.DataFrame:
        rows = []
        arms = self.df["arm"]  # categorical: comparing codes, no string per participant
        for label in [spec.arms["control"], spec.arms["intervention"], "all"]:
            m = np.ones(self.n, bool) if label == "all" else (arms == label).to_numpy()
            rows.append(
                {
                    "model": spec.name,
                    "arm": label,
                    "n_participants": int(m.sum()),
                    "n_events": int(self.y[m].sum()),
                    "exposure_days": float(np.exp(self.offset[m]).sum()),
                }
            )
        out = pd.DataFrame(rows)
        out["n_input"] = self.n_input
        out["n_dropped_zero_exposure"] = self.n_zero_exposure
        out["n_dropped_missing"] = self.n_missing
        return out


def _prepare(spec: ModelSpec, counts: pd.DataFrame | None) -> _Prepared:
    """Checks and design; data problems raise :class:`NotEstimable` with the reason."""
    if counts is None or len(counts) == 0:
        raise NotEstimable("no participants in the counts dataset")
    missing_cols = [c for c in ("arm", Y, EXPOSURE) if c not in counts.columns]
    if missing_cols:
        raise NotEstimable(f"counts dataset lacks column(s) {missing_cols}")
    df = counts.copy()
    n_input = len(df)
    exposure = pd.to_numeric(df[EXPOSURE], errors="coerce")
    keep = exposure.notna() & (exposure > 0)
    n_zero = int((~keep).sum())
    if n_zero:
        df = df.loc[keep]
    if len(df) == 0:
        raise NotEstimable(
            f"no participant has positive exposure ({n_zero} with zero exposure dropped)"
        )
    if not isinstance(df["arm"].dtype, pd.CategoricalDtype):
        df["arm"] = pd.Categorical(
            df["arm"], categories=[spec.arms["control"], spec.arms["intervention"]]
        )
    try:
        X, names = design(spec.formula, df, intercept=True)
    except Exception as exc:  # formula or column problems are results, not crashes
        raise NotEstimable(f"cannot build the design matrix: {exc}") from exc
    n_missing = len(df) - len(X)
    if n_missing:
        df = df.loc[X.index]
    y = pd.to_numeric(df[Y], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(y)
    if not ok.all():
        n_missing += int((~ok).sum())
        df, X, y = df.loc[ok], X.loc[ok], y[ok]
    offset = np.log(df[EXPOSURE].to_numpy(dtype=float))
    prep = _Prepared(df, X.to_numpy(), names, y, offset, n_input, n_zero, n_missing)
    counts_kw = {"n_participants": prep.n, "n_events": int(y.sum()) if y.size else 0}
    note = prep.dropped_message()
    suffix = f" ({note})" if note else ""
    if prep.n == 0:
        raise NotEstimable("no participant left after dropping missing values" + suffix)
    if np.any(y < 0) or np.any(y != np.round(y)):
        raise NotEstimable("n_episodes must be non-negative integers" + suffix, **counts_kw)
    term = spec.intervention_term
    arms_present = df["arm"].dropna().unique()
    if len(arms_present) < 2 or term not in names:
        raise NotEstimable("only one arm among the analysed participants" + suffix, **counts_kw)
    if prep.n_events == 0:
        raise NotEstimable("no episodes in either arm" + suffix, **counts_kw)
    for label in (spec.arms["control"], spec.arms["intervention"]):
        if y[(df["arm"] == label).to_numpy()].sum() == 0:
            raise NotEstimable(
                f"no episodes in the {label} arm: the rate ratio is not estimable"
                " (separation)" + suffix,
                **counts_kw,
            )
    if np.linalg.matrix_rank(prep.X) < prep.X.shape[1]:
        raise NotEstimable("the design matrix is rank deficient" + suffix, **counts_kw)
    if prep.n <= prep.X.shape[1]:
        raise NotEstimable("too few participants for the number of terms" + suffix, **counts_kw)
    return prep


def _warning_messages(caught) -> list[str]:
    """Convergence-type warnings caught during a fit (others are dropped as noise)."""
    from statsmodels.tools.sm_exceptions import (
        ConvergenceWarning,
        HessianInversionWarning,
        PerfectSeparationWarning,
    )

    keep = (ConvergenceWarning, HessianInversionWarning, PerfectSeparationWarning)
    out = []
    for w in caught:
        if issubclass(w.category, keep):
            msg = f"{w.category.__name__}: {str(w.message).splitlines()[0]}"
            if msg not in out:
                out.append(msg)
    return out


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _poisson_glm(prep: _Prepared):
    # The GLM module, not statsmodels.api: the latter imports tsa, graphics and scipy.signal
    # (about 2 s of every job's start-up, measured under load).
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    X, y, offset, freq = prep.collapsed
    model = GLM(y, X, family=families.Poisson(), offset=offset, freq_weights=freq)
    # Tighter than R's default epsilon (1e-8): R's reference was fitted with 1e-12 too.
    return model.fit(method="IRLS", tol=1e-12, maxiter=200)


def _finite(*arrays) -> bool:
    return all(np.all(np.isfinite(np.asarray(a))) for a in arrays)


class _CountModel(Model):
    """What the count models share: the ``counts`` dataset, prepared by :func:`_prepare` (data
    problems become failed results), and :func:`quietly` around the fit."""

    datasets = ("counts",)
    effect_measure: ClassVar[str | None] = "rate ratio"
    claim_metrics: ClassVar[tuple[str, ...]] = ("rate_reduction",)

    def fit(self, spec: ModelSpec, **data: pd.DataFrame) -> ModelResult:
        return quietly(self._fit, spec, data)

    def _fit(self, spec: ModelSpec, **data: pd.DataFrame) -> ModelResult:
        prep = _prepare(spec, data.get("counts"))
        return self._fit_prepared(spec, prep, prep.dropped_message())

    def _fit_prepared(self, spec: ModelSpec, prep: _Prepared, note: str) -> ModelResult:
        """Fit on the analysed rows; ``note`` says what was dropped ("" if nothing)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Poisson
# ---------------------------------------------------------------------------------------------


def cameron_trivedi(y: np.ndarray, mu: np.ndarray) -> pd.DataFrame:
    """AER::dispersiontest: the Cameron-Trivedi auxiliary-regression tests of equidispersion.

    aux_i = ((y_i - mu_i)^2 - y_i) / mu_i.
    - trafo = NULL: H0 Var = mu vs Var = c mu, c > 1; z = sqrt(n) mean(aux) / sd(aux),
      estimate c = mean(aux) + 1;
    - trafo = g: OLS without intercept of aux on g(mu) / mu; z = that coefficient's t value,
      estimate alpha (g(mu) = mu^2: NB2-type, Var = mu + alpha mu^2; g(mu) = mu: NB1-type).
    One-sided (overdispersion) p-values, upper tail of N(0, 1), as AER's default.
    """
    aux = ((y - mu) ** 2 - y) / mu
    n = aux.size
    rows = []
    z = np.sqrt(n) * aux.mean() / aux.std(ddof=1)
    rows.append(("cameron_trivedi", "Var = c * mu", "dispersion", aux.mean() + 1.0, 1.0, z))
    for power, form in ((2, "Var = mu + alpha * mu^2"), (1, "Var = mu + alpha * mu")):
        x = mu**power / mu
        coef = (x @ aux) / (x @ x)
        resid = aux - coef * x
        s2 = (resid @ resid) / (n - 1)
        z = coef / np.sqrt(s2 / (x @ x))
        rows.append((f"cameron_trivedi_trafo{power}", form, "alpha", coef, 0.0, z))
    out = pd.DataFrame(
        rows,
        columns=["test", "alternative_form", "parameter", "estimate", "null_value", "statistic"],
    )
    out["df"] = np.nan
    out["p_value"] = stats.norm.sf(out["statistic"])
    return out


@register
class PoissonModel(_CountModel):
    """Poisson GLM of episodes with log-exposure offset; tidy errors: sandwich HC0."""

    kind = "poisson"
    group: ClassVar[str] = "marginal rate"
    title: ClassVar[str] = "Poisson rate model"
    estimand: ClassVar[str] = (
        "ratio of the episode rates per participant-day at risk, intervention vs control "
        "(episodes over exposure, offset log exposure); HC0 sandwich errors, valid under "
        "overdispersion"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = (
        ExtraTable("overdispersion", "Overdispersion of the Poisson model (Cameron-Trivedi)"),
        ExtraTable("naive", "Model-based (naive) standard errors", "appendix"),
        ExtraTable("hc1", "HC1 sandwich standard errors", "appendix"),
        ExtraTable("sample", "Participants analysed and dropped", "appendix"),
    )
    reference: ClassVar[str] = "Cameron and Trivedi (2013)"
    r_call: ClassVar[str] = (
        "glm(n_episodes ~ arm + offset(log(exposure_days)), family = poisson); "
        "sandwich::vcovHC(fit, type = 'HC0')"
    )

    def _fit_prepared(self, spec: ModelSpec, prep: _Prepared, note: str) -> ModelResult:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = _poisson_glm(prep)
            except Exception as exc:  # numerical failure is a result
                raise NotEstimable(
                    _join(f"Poisson fit failed: {exc}", note), **prep.counts_kw
                ) from exc
        problems = _warning_messages(caught)
        beta = np.asarray(res.params)
        converged = bool(getattr(res, "converged", True)) and not problems and _finite(beta)
        mu = np.exp(prep.X @ beta + prep.offset)
        # Model-based covariance inv(X' diag(mu) X) at the final estimate (R's vcov(glm) uses the
        # weights of its last IRLS iteration: the same at convergence).
        naive = np.linalg.inv(prep.X.T @ (prep.X * mu[:, None]))
        # sandwich::vcovHC(type = "HC0"): bread = inv(X' W X) (W = mu), scores x_i (y_i - mu_i).
        hc0 = sandwich(naive, prep.X * (prep.y - mu)[:, None])
        n, p = prep.X.shape
        hc1 = hc0 * n / (n - p)
        llf = float(res.llf)  # includes -log(y!), as R's logLik
        message = _join(note, *problems, "" if converged else "Poisson IRLS did not converge")
        common: dict[str, Any] = dict(
            log_likelihood=llf, converged=converged, message=message, **prep.counts_kw
        )
        table = tidy(spec, prep.names, beta, np.sqrt(np.diag(hc0)), robust=True, **common)
        pearson = float(np.sum((prep.y - mu) ** 2 / mu))
        df_resid = n - p
        od = cameron_trivedi(prep.y, mu)
        pearson_row = pd.DataFrame(
            [
                {
                    "test": "pearson_chi2",
                    "alternative_form": "Var = phi * mu",
                    "parameter": "chi2 / df",
                    "estimate": pearson / df_resid,
                    "null_value": 1.0,
                    "statistic": pearson,
                    "df": float(df_resid),
                    "p_value": float(stats.chi2.sf(pearson, df_resid)),
                }
            ]
        )
        od = pd.concat([pearson_row, od], ignore_index=True)
        od.insert(0, "model", spec.name)
        od["deviance"] = float(res.deviance)
        extras = {
            "naive": tidy(spec, prep.names, beta, np.sqrt(np.diag(naive)), robust=False, **common),
            "hc1": tidy(spec, prep.names, beta, np.sqrt(np.diag(hc1)), robust=True, **common),
            "overdispersion": od,
            "sample": prep.sample_table(spec),
        }
        return ModelResult(table, extras, converged=converged, message=message)


# ---------------------------------------------------------------------------------------------
# Negative binomial (NB2), MASS::glm.nb
# ---------------------------------------------------------------------------------------------


def _theta_score(th, mu, y, w=None):
    """d loglik / d theta of NB2 (MASS::theta.ml's score), rows weighted by frequency `w`."""
    terms = (
        special.digamma(th + y)
        - special.digamma(th)
        + np.log(th)
        + 1.0
        - np.log(th + mu)
        - (y + th) / (mu + th)
    )
    return np.sum(terms if w is None else w * terms)


def _theta_info(th, mu, y, w=None):
    """Minus d2 loglik / d theta2 (MASS::theta.ml's information), rows weighted by `w`."""
    terms = (
        -special.polygamma(1, th + y)
        + special.polygamma(1, th)
        - 1.0 / th
        + 2.0 / (mu + th)
        - (y + th) / (mu + th) ** 2
    )
    return np.sum(terms if w is None else w * terms)


def theta_ml_se(
    y: np.ndarray, mu: np.ndarray, limit: int = 25, w: np.ndarray | None = None
) -> tuple[float, float]:
    """MASS::theta.ml at the final mu: (theta, SE) exactly as glm.nb reports them.

    theta.ml runs Newton from the moment estimate n / sum((y / mu - 1)^2) until the step is at most
    .Machine$double.eps^0.25 and reports SE = 1 / sqrt(info) with the information of the last
    Newton step, i.e. evaluated one iterate before the returned theta (limit = glm.control's
    maxit = 25). The information-at-the-estimate SE is given beside it by the caller. `w`: row
    frequencies (collapsed rows), None for one row per participant.
    """
    eps = np.finfo(float).eps ** 0.25
    n = y.size if w is None else np.sum(w)
    dev = (y / mu - 1.0) ** 2
    t0 = n / np.sum(dev if w is None else w * dev)
    it, delta, info = 0, 1.0, np.nan
    while True:
        it += 1
        if not (it < limit and abs(delta) > eps):
            break
        t0 = abs(t0)
        info = _theta_info(t0, mu, y, w)
        delta = _theta_score(t0, mu, y, w) / info
        t0 = t0 + delta
    return float(t0), float(np.sqrt(1.0 / info))


def _score_tolerance(n: int) -> float:
    return 1e-6 * max(1.0, float(n))


def _not_below_poisson(llf_nb: float, llf_pois: float) -> bool:
    """NB2 nests the Poisson model (alpha -> 0), so its maximised log-likelihood is never below
    the Poisson one; a fit below it stopped at a stationary point with a huge alpha (Newton from
    the moment estimate can run there while the score looks zero: theta 1e-6 where glm.nb gives
    0.53 on tests/test_ipcw.py's simulate(2000, 0))."""
    return bool(llf_nb >= llf_pois - 1e-8 * max(1.0, abs(llf_pois)))


@dataclass(frozen=True)
class _NB2Fit:
    """An NB2 maximum-likelihood fit: ``params`` = (beta, alpha = 1 / theta), the full
    log-likelihood (theta included, as R's ``logLik(glm.nb)``) and the score at ``params``."""

    params: np.ndarray
    llf: float
    score: np.ndarray


def _nb2_loglik_score(beta, theta, X, y, offset, w) -> tuple[float, np.ndarray]:
    """NB2 log-likelihood and score in (beta, alpha) at (beta, theta), rows weighted by `w`."""
    mu = np.exp(X @ beta + offset)
    ll = (
        special.gammaln(y + theta)
        - special.gammaln(theta)
        - special.gammaln(y + 1.0)
        + theta * (np.log(theta) - np.log(theta + mu))
        + y * (np.log(mu) - np.log(theta + mu))
    )
    score_beta = X.T @ (w * (y - mu) / (1.0 + mu / theta))
    score_alpha = -(theta**2) * _theta_score(theta, mu, y, w)
    return float(np.sum(w * ll)), np.append(score_beta, score_alpha)


def _theta_newton(theta, mu, y, w, tol: float = 1e-13, limit: int = 100) -> float:
    """Theta maximising the NB2 likelihood at fixed mu (Newton on theta, as MASS::theta.ml, but
    run to machine precision)."""
    for _ in range(limit):
        step = _theta_score(theta, mu, y, w) / _theta_info(theta, mu, y, w)
        new = theta + step
        if not np.isfinite(new) or new <= 0:
            new = theta / 2.0  # keep theta positive: halve instead of jumping below zero
        if abs(new - theta) <= tol * max(1.0, abs(theta)):
            return float(new)
        theta = new
    return float(theta)


def _fit_negbin(prep: _Prepared, pois) -> tuple[_NB2Fit | None, list[str]]:
    """NB2 by maximum likelihood with MASS::glm.nb's algorithm, run to a zero score.

    glm.nb alternates a GLM fit of beta at fixed theta (IRLS, the NB2 family with known theta)
    with theta.ml at fixed mu. The beta-theta block of NB2's information is zero, so the
    alternation converges fast; it stops when the joint score is zero (|score| <= 1e-6 n, as
    every count model here) and the log-likelihood no longer changes.

    Why not statsmodels' discrete ``NegativeBinomial`` (used before, Newton on (beta, alpha)):
    its score and Hessian evaluate polygamma on every row at every step, and it has no frequency
    weights. Profiled on 1M participants it took 20 s of a 32 s fit (R's glm.nb: 24 s). The GLM
    route fits the distinct rows (``_Prepared.collapsed``) with frequency weights: the same
    estimates in well under a second.
    """
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM
    from statsmodels.tools.sm_exceptions import DomainWarning

    X, y, offset, w = prep.collapsed
    beta = np.asarray(pois.params, dtype=float)
    mu = np.exp(X @ beta + offset)
    theta, _ = theta_ml_se(y, mu, w=w)
    if not np.isfinite(theta) or theta <= 0:
        theta = 1.0
    messages: list[str] = []
    llf_old = -np.inf
    for _ in range(200):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", DomainWarning)
            try:
                family = families.NegativeBinomial(alpha=1.0 / theta)
                glm = GLM(y, X, family=family, offset=offset, freq_weights=w)
                res = glm.fit(start_params=beta, method="IRLS", tol=1e-14, maxiter=200)
            except Exception as exc:  # numerical failure: reported, never raised
                return None, [f"NB2 GLM step: {exc}"]
        messages = _warning_messages(caught)
        beta = np.asarray(res.params, dtype=float)
        if not _finite(beta):
            return None, ["NB2 GLM step gave non-finite coefficients"]
        mu = np.exp(X @ beta + offset)
        theta = _theta_newton(theta, mu, y, w)
        if not np.isfinite(theta):
            return None, ["NB2 theta step gave a non-finite theta"]
        llf, score = _nb2_loglik_score(beta, theta, X, y, offset, w)
        done = abs(llf - llf_old) <= 1e-14 * abs(llf)
        if theta > 1e10 or np.max(np.abs(score)) <= _score_tolerance(prep.n) * 1e-6 or done:
            break  # theta > 1e10: alpha at its boundary 0, which the caller reports
        llf_old = llf
    return _NB2Fit(np.append(beta, 1.0 / theta), llf, score), messages


@dataclass(frozen=True)
class NegBinOptions:
    """Options of the negative binomial model."""

    se: Literal["model", "robust"] = option(
        "model", doc="model: glm.nb's model-based SE; robust: the HC0 sandwich (sandwich::vcovHC)"
    )


@register
class NegativeBinomialModel(_CountModel):
    """NB2 regression (MASS::glm.nb conventions) with log-exposure offset. Option ``se``:
    ``model`` (default, glm.nb's) or ``robust`` (HC0 sandwich at the fitted theta, valid when the
    variance function is wrong); the other one is written as an extra (``robust`` / ``naive``).
    Intervals are Wald intervals on the log scale."""

    kind = "negbin"
    Options: ClassVar[type] = NegBinOptions
    group: ClassVar[str] = "marginal rate"
    title: ClassVar[str] = "Negative binomial rate model"
    estimand: ClassVar[str] = (
        "ratio of the episode rates per participant-day at risk, intervention vs control, with "
        "between-participant heterogeneity as NB2 overdispersion; Wald intervals with "
        "model-based errors at the fitted theta, or the HC0 sandwich with se: robust"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = (
        ExtraTable("dispersion", "Negative binomial dispersion (theta)"),
        ExtraTable("lr_test", "Negative binomial vs Poisson (likelihood ratio)"),
        ExtraTable("robust", "HC0 sandwich standard errors", "appendix"),
        ExtraTable("naive", "Model-based standard errors (glm.nb)", "appendix"),
        ExtraTable("sample", "Participants analysed and dropped", "appendix"),
    )
    reference: ClassVar[str] = "Lawless (1987); Venables and Ripley (2002)"
    r_call: ClassVar[str] = "MASS::glm.nb(n_episodes ~ arm + offset(log(exposure_days)))"

    def _fit_prepared(self, spec: ModelSpec, prep: _Prepared, note: str) -> ModelResult:
        counts_kw = prep.counts_kw
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pois = _poisson_glm(prep)
            res, problems = _fit_negbin(prep, pois)
        except Exception as exc:
            raise NotEstimable(
                _join(f"negative binomial fit failed: {exc}", note), **counts_kw
            ) from exc
        if res is None:
            raise NotEstimable(_join("negative binomial fit failed", *problems, note), **counts_kw)
        params = np.asarray(res.params)
        beta, alpha = params[:-1], float(params[-1])
        if not alpha > 1e-8:
            raise NotEstimable(
                _join(
                    "no overdispersion: the NB2 dispersion is at its boundary (alpha = 0,"
                    " theta = infinity); use the Poisson model",
                    note,
                ),
                **counts_kw,
            )
        theta = 1.0 / alpha
        mu = np.exp(prep.X @ beta + prep.offset)
        score = res.score
        converged = bool(np.max(np.abs(score)) <= _score_tolerance(prep.n)) and _not_below_poisson(
            float(res.llf), float(pois.llf)
        )
        if converged:
            problems = []  # warnings of discarded attempts do not matter
        else:
            problems.append(
                f"score not zero at the estimate (max |score| {np.max(np.abs(score)):.2g})"
            )
        # glm.nb's covariance: the GLM information at the final theta, theta held fixed.
        w = mu / (1.0 + alpha * mu)
        bread = np.linalg.inv(prep.X.T @ (prep.X * w[:, None]))
        # sandwich::vcovHC(glm.nb fit, "HC0"): GLM scores at fixed theta.
        hc0 = sandwich(bread, prep.X * ((prep.y - mu) / (1.0 + alpha * mu))[:, None])
        cX, cy, coff, freq = prep.collapsed
        cmu = np.exp(cX @ beta + coff)
        _, se_theta_r = theta_ml_se(cy, cmu, w=freq)
        se_theta_final = float(np.sqrt(1.0 / _theta_info(theta, cmu, cy, freq)))
        llf = float(res.llf)  # full NB2 log-likelihood, theta included (R's logLik(glm.nb))
        llf_pois = float(pois.llf)
        lr = max(0.0, 2.0 * (llf - llf_pois))
        message = _join(note, *problems, "" if converged else "NB2 fit did not converge")
        common: dict[str, Any] = dict(
            log_likelihood=llf, converged=converged, message=message, **counts_kw
        )
        robust = spec.options.get("se") == "robust"
        main, other = (hc0, bread) if robust else (bread, hc0)
        table = tidy(spec, prep.names, beta, np.sqrt(np.diag(main)), robust=robust, **common)
        dispersion = pd.DataFrame(
            [
                {
                    "model": spec.name,
                    "theta": theta,
                    "se_theta": se_theta_r,
                    "se_theta_at_estimate": se_theta_final,
                    "alpha": alpha,
                    "se_alpha": se_theta_final / theta**2,
                    "log_likelihood": llf,
                    "n_participants": prep.n,
                    "converged": converged,
                }
            ]
        )
        lr_test = pd.DataFrame(
            [
                {
                    "model": spec.name,
                    "test": "lr_negbin_vs_poisson",
                    "statistic": lr,
                    "df": 1,
                    "p_value": 0.5 * float(stats.chi2.sf(lr, 1)),
                    "log_likelihood_negbin": llf,
                    "log_likelihood_poisson": llf_pois,
                    "note": "H0 theta = infinity is on the boundary: half chi-square(1) p-value",
                }
            ]
        )
        extras = {
            "dispersion": dispersion,
            "lr_test": lr_test,
            "naive" if robust else "robust": tidy(
                spec, prep.names, beta, np.sqrt(np.diag(other)), robust=not robust, **common
            ),
            "sample": prep.sample_table(spec),
        }
        return ModelResult(table, extras, converged=converged, message=message)


# ---------------------------------------------------------------------------------------------
# Zero-inflated negative binomial, pscl::zeroinfl(dist = "negbin")
# ---------------------------------------------------------------------------------------------


def _log_plogis(x):
    return -np.logaddexp(0.0, -x)


def zinb_loglik(par, X, Z, y, offset, kx, kz):
    """ZINB log-likelihood and its gradient in pscl's parametrisation (beta, gamma, log theta)."""
    beta, gamma, logth = par[:kx], par[kx : kx + kz], par[kx + kz]
    th = np.exp(logth)
    eta = X @ beta + offset
    mu = np.exp(eta)
    zg = Z @ gamma
    log_pi, log_1mpi = _log_plogis(zg), _log_plogis(-zg)
    pi = np.exp(log_pi)
    log_th_mu = np.log(th + mu)
    log_f0 = th * (logth - log_th_mu)
    zero = y == 0
    ll0 = np.logaddexp(log_pi, log_1mpi + log_f0)
    lnb = (
        special.gammaln(y + th)
        - special.gammaln(th)
        - special.gammaln(y + 1.0)
        + th * (logth - log_th_mu)
        + y * (eta - log_th_mu)
    )
    ll = np.where(zero, ll0, log_1mpi + lnb)
    # gradient
    r0 = np.exp(log_1mpi + log_f0 - ll0)  # (1 - pi) f0 / L0 at y = 0
    d_eta = np.where(zero, -r0 * th * mu / (th + mu), th * (y - mu) / (th + mu))
    d_zg = np.where(zero, np.exp(log_pi + log_1mpi - ll0) * (1.0 - np.exp(log_f0)), -pi)
    dlogf0_dth = logth - log_th_mu + mu / (th + mu)
    dnb_dth = (
        special.digamma(y + th)
        - special.digamma(th)
        + logth
        + 1.0
        - log_th_mu
        - (y + th) / (mu + th)
    )
    d_logth = th * np.where(zero, r0 * dlogf0_dth, dnb_dth)
    grad = np.concatenate([X.T @ d_eta, Z.T @ d_zg, [d_logth.sum()]])
    return float(ll.sum()), grad


def central_hessian(grad, par, step):
    """optim's optimHess: central differences of the gradient, symmetrised."""
    k = par.size
    H = np.empty((k, k))
    for i in range(k):
        e = np.zeros(k)
        e[i] = step
        H[i] = (grad(par + e) - grad(par - e)) / (2.0 * step)
    return 0.5 * (H + H.T)


def _inflation_design(spec: ModelSpec, df: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    rhs = str(spec.options.get("inflation", "1")).strip() or "1"
    if rhs == "1":
        return np.ones((len(df), 1)), ["Intercept"]
    Z, names = design(rhs, df, intercept=True)
    return Z.reindex(df.index).to_numpy(), names


@dataclass(frozen=True)
class ZINBOptions:
    """Options of the zero-inflated negative binomial."""

    inflation: str = option("1", doc="right-hand side of the zero-inflation formula")
    hessian_step: float = option(
        1e-5, minimum=0.0, maximum=0.1, exclusive_minimum=True, doc="central-difference step"
    )


@register
class ZeroInflatedNegBinModel(_CountModel):
    """ZINB (pscl::zeroinfl conventions): NB2 counts with offset, logit zero inflation."""

    kind = "zinb"
    Options: ClassVar[type] = ZINBOptions
    group: ClassVar[str] = "conditional"
    title: ClassVar[str] = "Zero-inflated negative binomial"
    estimand: ClassVar[str] = (
        "ratio of the episode rates per participant-day at risk in the count component "
        "(participants not in the structural-zero class), intervention vs control; "
        "model-based errors"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = (
        ExtraTable("dispersion", "Zero-inflated negative binomial: dispersion and zero share"),
        ExtraTable("sample", "Participants analysed and dropped", "appendix"),
    )
    reference: ClassVar[str] = "Lambert (1992); Zeileis, Kleiber and Jackman (2008)"
    r_call: ClassVar[str] = (
        "pscl::zeroinfl(n_episodes ~ arm + offset(log(exposure_days)) | 1, dist = 'negbin')"
    )

    def _fit_prepared(self, spec: ModelSpec, prep: _Prepared, note: str) -> ModelResult:
        counts_kw = prep.counts_kw
        try:
            Z, znames = _inflation_design(spec, prep.df)
        except Exception as exc:
            raise NotEstimable(
                _join(f"cannot build the inflation design: {exc}", note), **counts_kw
            ) from exc
        if not np.all(np.isfinite(Z)):
            raise NotEstimable(
                _join("missing values in the inflation covariates", note), **counts_kw
            )
        if not np.any(prep.y == 0):
            raise NotEstimable(
                _join("no zero counts: zero inflation is not estimable", note), **counts_kw
            )
        step = float(spec.options.get("hessian_step", 1e-5))
        X, y, off = prep.X, prep.y, prep.offset
        kx, kz = X.shape[1], Z.shape[1]

        def loglik(p):
            return zinb_loglik(p, X, Z, y, off, kx, kz)

        def grad(p):
            return loglik(p)[1]

        try:
            start, optimiser, par, sm_llf, sm_problems = self._fit_statsmodels(prep, Z)
        except Exception as exc:  # numerical failure is a result
            raise NotEstimable(_join(f"ZINB fit failed: {exc}", note), **counts_kw) from exc
        if par is None:
            # statsmodels gave no usable estimate: BFGS on the analytic score from the same start,
            # as pscl does (optim BFGS, log theta unconstrained).
            from scipy.optimize import minimize

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt = minimize(
                    lambda p: tuple(-v for v in loglik(p)),
                    start,
                    jac=True,
                    method="BFGS",
                    options={"gtol": 1e-8, "maxiter": 10000},
                )
            par, optimiser = opt.x, "scipy BFGS (statsmodels failed)"
        par, llf, g = self._newton_polish(loglik, grad, par)
        gmax = float(np.max(np.abs(g))) if _finite(g) else np.inf
        problems: list[str] = []
        converged = bool(np.isfinite(llf) and gmax <= _score_tolerance(prep.n))
        if not converged:
            problems += sm_problems
            problems.append(f"score not zero at the estimate (max |score| {gmax:.2g})")
        H = central_hessian(grad, par, step)
        with np.errstate(invalid="ignore"):
            try:
                vc = np.linalg.inv(-H)
                se_all = np.sqrt(np.diag(vc))
            except np.linalg.LinAlgError:
                se_all = np.full(par.size, np.nan)
        if not _finite(se_all):
            converged = False
            problems.append("the Hessian is not negative definite: no standard errors")
        theta = float(np.exp(par[-1]))
        pi_hat = special.expit(Z @ par[kx : kx + kz])
        boundary = ""
        if np.max(pi_hat) < 1e-4:
            boundary = (
                "zero inflation at its boundary (structural-zero probability"
                f" {np.max(pi_hat):.1e}):"
                " the zero_ terms are not identified and the count part is the NB2 fit"
            )
        message = _join(note, boundary, *problems, "" if converged else "ZINB did not converge")
        terms = list(prep.names) + [f"zero_{n}" for n in znames]
        table = tidy(
            spec,
            terms,
            par[:-1],
            se_all[:-1],
            robust=False,
            log_likelihood=llf,
            converged=converged,
            message=message,
            **counts_kw,
        )
        dispersion = pd.DataFrame(
            [
                {
                    "model": spec.name,
                    "theta": theta,
                    "se_theta": theta * se_all[-1],
                    "log_theta": par[-1],
                    "se_log_theta": se_all[-1],
                    "alpha": 1.0 / theta,
                    "log_likelihood": llf,
                    "log_likelihood_optimiser": sm_llf,
                    "optimiser": optimiser,
                    "max_abs_score": gmax,
                    "hessian_step": step,
                    "mean_zero_probability": float(np.mean(pi_hat)),
                    "n_participants": prep.n,
                    "converged": converged,
                }
            ]
        )
        extras = {"dispersion": dispersion, "sample": prep.sample_table(spec)}
        return ModelResult(table, extras, converged=converged, message=message)

    @staticmethod
    def _newton_polish(loglik, grad, par, iterations: int = 50):
        """Newton steps on the analytic score with step halving (never lowers the likelihood)."""
        llf, g = loglik(par)
        for _ in range(iterations):
            if not _finite(g) or np.max(np.abs(g)) < 1e-10:
                break
            H = central_hessian(grad, par, 1e-5)
            try:
                direction = np.linalg.solve(H, g)
            except np.linalg.LinAlgError:
                break
            t, accepted = 1.0, False
            while t > 1e-8:
                cand = par - t * direction
                c_llf, c_g = loglik(cand)
                if np.isfinite(c_llf) and c_llf >= llf:
                    accepted = True
                    break
                t /= 2.0
            if not accepted:
                break
            moved = float(np.max(np.abs(cand - par)))
            par, llf, g = cand, c_llf, c_g
            if moved < 1e-12:
                break
        return par, llf, g

    @staticmethod
    def _fit_statsmodels(prep: _Prepared, Z: np.ndarray):
        """statsmodels ZINB-P(2), BFGS then Newton, from the NB2 fit and pi = 0.12.

        Returns (start, optimiser, parameters or None, llf, warnings), parameters in pscl's order
        and parametrisation (beta, gamma, log theta).
        """
        from statsmodels.discrete.count_model import ZeroInflatedNegativeBinomialP

        kx, kz = prep.X.shape[1], Z.shape[1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pois = _poisson_glm(prep)
        nb, _ = _fit_negbin(prep, pois)
        if nb is not None and _finite(nb.params) and nb.params[-1] > 0:
            main = np.asarray(nb.params)
        else:
            main = np.append(np.asarray(pois.params), 1.0)
        gamma0 = np.zeros(kz)
        gamma0[0] = -2.0
        start_pscl = np.concatenate([main[:-1], gamma0, [-np.log(main[-1])]])
        model = ZeroInflatedNegativeBinomialP(
            prep.y, prep.X, exog_infl=Z, offset=prep.offset, inflation="logit", p=2
        )
        best, best_llf, msgs = None, -np.inf, []
        params = np.concatenate([gamma0, main])
        for method, kw in (("bfgs", {"maxiter": 5000, "gtol": 1e-8}), ("newton", {"maxiter": 50})):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    res = model.fit(start_params=params, method=method, disp=0, **kw)
                except Exception as exc:
                    msgs.append(f"statsmodels {method}: {exc}")
                    continue
            msgs += _warning_messages(caught)
            if _finite(res.params, res.llf) and res.params[-1] > 0 and res.llf > best_llf:
                best, best_llf, params = (
                    np.asarray(res.params),
                    float(res.llf),
                    np.asarray(res.params),
                )
        if best is None:
            return start_pscl, "none", None, np.nan, msgs
        par = np.concatenate([best[kz : kz + kx], best[:kz], [-np.log(best[-1])]])
        return (
            start_pscl,
            "statsmodels ZeroInflatedNegativeBinomialP bfgs+newton",
            par,
            best_llf,
            msgs,
        )
