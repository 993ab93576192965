"""Inverse-probability-of-censoring weighted (IPCW) Andersen-Gill and negative-binomial rate
models: the marginal rate ratio had nobody dropped out informatively.

Estimand (ICH E9(R1) hypothetical strategy): the ratio of the episode rates, intervention vs
control, in the hypothetical world where no participant withdraws, assuming that withdrawal is
*at random given* the arm, the study covariates and the episodes so far (no unmeasured cause of
withdrawal that also drives the episodes).  Which ``end_reason`` values are informative dropout
is the model option ``informative_dropout`` (default ``[withdrawn]``, the study config's
``informative_dropout:``); any other end of follow-up (completed, lost to follow-up) is
administrative censoring, taken to be independent of the episodes as in the unweighted models.

The dropout (censoring) model
-----------------------------
On the counting-process rows (start, stop] (one row per inter-episode interval, so
``episodes_so_far = episode - 1`` is constant on each row and time-varying across rows), a
participant whose follow-up ended with an informative reason has a dropout "event" at the stop of
their last row (after any episode that day: an episode at the dropout day is observed).

* Denominator: a Cox model for the dropout hazard, Breslow ties (days are discrete), covariates
  ``arm + <dropout covariates> + episodes_so_far`` (the dropout covariates default to every
  study covariate in the data); fitted by the project's Cox engine
  (:func:`recurstudy.models.coxph_engine.coxph_fit`), baseline hazard dL0 by Breslow
  (:meth:`recurstudy.models.risksets.PartialLikelihood.hazard`).  Participant i's cumulative
  dropout hazard just before t is L_i(t-) = sum over dropout times u < t of
  exp(x_i(u) b) dL0(u), with x_i(u) the covariates of the row at risk at u.
* Numerator (stabilisation): the Nelson-Aalen cumulative dropout hazard of the participant's arm,
  La(t-) (a model on arm only, with an arm-specific baseline).
* Stabilised weight at t: sw_i(t) = exp(-La(t-)) / exp(-L_i(t-)), the ratio of the
  probabilities of remaining in the study through t- (Fleming-Harrington form of the survival).
  It changes at the dropout times and the participant's episodes, so the rows are split at every
  distinct dropout time (:func:`split_at`): on each piece (a, b] the weight is constant,
  sw_i(a+).  Splitting leaves the Andersen-Gill partial likelihood unchanged (the risk sets are
  the same), so with all weights 1 the weighted fit is the unweighted one.
* Optional truncation (option ``truncate: q``): weights below the (100 - q)-th or above the q-th
  percentile of all pieces' weights are set to those percentiles.
* Diagnostics (extra ``weights``): mean, sd, min, percentiles and max of the stabilised weights
  over the pieces, by arm and overall, before and (with truncation) after truncating; the mean
  should be near 1 (each arm's mean weight at each time is 1 in expectation).

The weighted fits
-----------------
``ipcw_andersen_gill``: ``coxph(Surv(start, stop, event) ~ arm + cluster(participant_id),
weights = sw)`` on the pieces (R: the same call on the same weights agrees to 1e-8,
tests/fixtures/ipcw), robust sandwich clustered on participant (weighted dfbeta residuals, as R).

``ipcw_negbin``: a rate model on the pieces, E[y | piece] = exp(x b) * length, y = 1 if the piece
ends in an episode, solved as a GLM with the NB2 variance mu + alpha mu^2 at alpha = 1 / theta
of the unweighted ``MASS::glm.nb`` fit on the participants' counts (alpha held fixed), offset
log(length), and the weights entered as *prior (variance) weights*: the estimating equation is
sum_pieces w x (y - mu) / (1 + alpha mu) = 0.  Frequency weights would give the same estimate
but would pretend that the data set has sum(w) independent pieces (wrong degrees of freedom and
model-based variance); neither matters here, because the variance is the sandwich clustered on
participant computed by hand: bread inv(sum w mu / (1 + alpha mu) x x'), meat the participants'
summed scores w x (y - mu) / (1 + alpha mu).  Within a piece alpha mu is small, so the
estimator is close to a weighted Poisson (independence-GEE) estimator; the extra ``comparison``
gives the same estimator without weights, so that the effect of the weighting is seen alone.

The NB2 working variance is applied per piece, so unlike the Andersen-Gill partial likelihood
the estimate depends on where the rows are cut (the dropout times), and under informative
dropout the per-piece factor 1 / (1 + alpha mu) is itself informative: in the simulation of
tests/test_ipcw.py (8 x 2000 participants, truth log 0.5 = -0.693) the IPCW NB averaged -0.727
where the Poisson working variance (option ``working_variance: poisson``, alpha = 0: invariant
to the cutting, and with weights 1 exactly the Poisson count model) averaged -0.703 and the IPCW
Andersen-Gill -0.700.  The NB version is kept as asked for (it sits beside glm.nb in the
report); the Poisson working variance is the better-behaved choice.

Both variances treat the weights as known (the dropout model's own uncertainty is ignored);
this is usually conservative for IPCW (Robins, Rotnitzky and Zhao 1994), not guaranteed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from recurstudy.contract import RESERVED_COLUMNS
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
from recurstudy.models.coxph_engine import coxph_fit
from recurstudy.models.monotone import raise_if_monotone
from recurstudy.models.risksets import PartialLikelihood, RiskSets
from recurstudy.models.variance import sandwich

ID = "participant_id"
EPISODES_SO_FAR = "episodes_so_far"
DEFAULT_INFORMATIVE = ("withdrawn",)
WEIGHT_PERCENTILES = (1, 5, 25, 50, 75, 95, 99)

__all__ = [
    "IPCWAndersenGill",
    "IPCWNegBin",
    "IPCWOptions",
    "IPCWWeights",
    "dropout_rows",
    "ipcw_weights",
    "split_at",
    "weight_diagnostics",
]


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def dropout_rows(
    cp: pd.DataFrame, participants: pd.DataFrame, reasons: list[str] | tuple[str, ...]
) -> np.ndarray:
    """0/1 per counting-process row: 1 on the last row (largest stop) of each participant whose
    ``end_reason`` is one of `reasons` (informative dropout), else 0.  `cp` must be sorted by
    participant and start."""
    if "end_reason" not in participants.columns:
        raise NotEstimable(
            "the participants table has no end_reason column: informative dropout cannot be "
            "told from administrative censoring"
        )
    why = participants.set_index(ID)["end_reason"].astype("string")
    dropped = set(why[why.isin([str(r) for r in reasons])].index)
    ids = cp[ID].to_numpy()
    last = np.append(ids[1:] != ids[:-1], True)
    return (last & np.isin(ids, list(dropped))).astype(np.int64)


def split_at(cp: pd.DataFrame, cuts: np.ndarray) -> pd.DataFrame:
    """The rows of `cp` (start, stop] cut at every time in `cuts` strictly inside them.

    Each piece keeps its row's columns; ``start`` / ``stop`` are the piece's, ``event`` is kept
    on the last piece only, and ``row`` is the position of the row in `cp`.  Vectorised (no loop
    over rows)."""
    cuts = np.unique(np.asarray(cuts, dtype=float))
    start = cp["start"].to_numpy(dtype=float)
    stop = cp["stop"].to_numpy(dtype=float)
    lo = np.searchsorted(cuts, start, side="right")  # first cut > start
    hi = np.searchsorted(cuts, stop, side="left")  # first cut >= stop
    n_inside = np.maximum(hi - lo, 0)
    n_pieces = n_inside + 1
    row = np.repeat(np.arange(len(cp)), n_pieces)
    first = np.cumsum(n_pieces) - n_pieces
    k = np.arange(row.size) - first[row]  # piece number within its row, 0..n_inside
    # piece k runs from (k == 0 ? start : cuts[lo + k - 1]) to (k == n_inside ? stop : cuts[lo + k])
    cut_idx_start = np.clip(lo[row] + k - 1, 0, max(cuts.size - 1, 0))
    cut_idx_stop = np.clip(lo[row] + k, 0, max(cuts.size - 1, 0))
    cut_vals = cuts if cuts.size else np.zeros(1)
    p_start = np.where(k == 0, start[row], cut_vals[cut_idx_start])
    is_last = k == n_inside[row]
    p_stop = np.where(is_last, stop[row], cut_vals[cut_idx_stop])
    out = cp.iloc[row].reset_index(drop=True)
    out["start"] = p_start
    out["stop"] = p_stop
    out["event"] = np.where(is_last, cp["event"].to_numpy()[row], 0).astype(np.int64)
    out["row"] = row
    return out


def _cumulative_at(times: np.ndarray, increments: np.ndarray, at: np.ndarray) -> np.ndarray:
    """sum of increments at times <= at (times sorted ascending)."""
    c = np.concatenate([[0.0], np.cumsum(increments)])
    return c[np.searchsorted(times, at, side="right")]


@dataclass
class IPCWWeights:
    """The split rows with their weights, and what the dropout model says."""

    pieces: pd.DataFrame  # cp rows split at dropout times; columns of cp + row, sw, weight
    dropout_model: pd.DataFrame  # the denominator Cox model's coefficients
    diagnostics: pd.DataFrame  # weight_diagnostics of sw (and of the truncated weights)
    n_dropouts: int
    truncated_at: tuple[float, float] | None = None


def ipcw_weights(
    cp: pd.DataFrame,
    dropout: np.ndarray,
    covariates: list[str],
    *,
    arms: tuple[str, str],
    truncate: float | None = None,
) -> IPCWWeights:
    """Stabilised IPCW weights on `cp` (sorted by participant and start) split at the dropout
    times (see the module docstring).  `dropout` is :func:`dropout_rows`; `covariates` the study
    covariates of the dropout model (beside arm and episodes so far).  ``weight`` is ``sw``,
    truncated at the (100 - truncate, truncate) percentiles when `truncate` is given."""
    cp = cp.reset_index(drop=True).copy()
    cp[EPISODES_SO_FAR] = cp["episode"].to_numpy() - 1
    start = cp["start"].to_numpy(dtype=float)
    stop = cp["stop"].to_numpy(dtype=float)
    d = np.asarray(dropout, dtype=np.int64)
    n_drop = int(d.sum())
    if n_drop == 0:
        pieces = cp.assign(row=np.arange(len(cp)), sw=1.0, weight=1.0)
        empty = pd.DataFrame(columns=["term", "estimate", "std_error", "exp_estimate"])
        return IPCWWeights(pieces, empty, weight_diagnostics(pieces, arms), 0)

    # Denominator: Cox model of the dropout hazard (Breslow ties), time-varying episodes so far.
    quoted = [c if c.isidentifier() else f"`{c}`" for c in covariates]
    formula = " + ".join(["arm", *quoted, EPISODES_SO_FAR])
    X, names = design(formula, cp, intercept=False)
    if len(X) != len(cp):
        raise NotEstimable("missing covariate values in the dropout model")
    keep = X.std(axis=0).to_numpy() > 0  # a constant column (e.g. no episodes) is not estimable
    X = X.loc[:, keep]
    names = [n for n, k in zip(names, keep, strict=True) if k]
    fit = coxph_fit(X.to_numpy(), stop, d, start=start, ties="breslow", names=names)
    # A dropout-model coefficient running off to -infinity (e.g. no informative dropout in one
    # arm) is left as it is: the weights are then at their limit (that arm's dropout hazard is
    # 0, as its Nelson-Aalen numerator), not an artefact; only the effect model must be finite.
    if not fit.converged or not np.all(np.isfinite(fit.coef)):
        raise NotEstimable(f"the dropout model did not converge ({fit.message or 'no fit'})")
    rs = RiskSets(stop, d == 1, start)
    pl = PartialLikelihood(rs, X.to_numpy(), ties="breslow")
    *_, terms = pl.evaluate(fit.coef)
    dL0 = pl.hazard(terms)  # baseline (x = 0) hazard jumps at the dropout times
    times = rs.group_time
    eta = X.to_numpy() @ fit.coef
    L0_start = _cumulative_at(times, dL0, start)
    L0_stop = _cumulative_at(times, dL0, stop)
    # Cumulative dropout hazard of each participant up to the start of each row.
    H = np.exp(eta) * (L0_stop - L0_start)
    ids = cp[ID].to_numpy()
    before = pd.Series(H).groupby(ids, sort=False).cumsum().to_numpy() - H

    # Numerator: Nelson-Aalen dropout hazard by arm.
    arm_txt = cp["arm"].astype(str).to_numpy()
    na: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for a in arms:
        m = arm_txt == a
        if not m.any():
            continue
        rs_a = RiskSets(stop[m], d[m] == 1, start[m])
        na[a] = (rs_a.group_time, rs_a.d / np.maximum(rs_a.n_at_risk(), 1))

    pieces = split_at(cp, times)
    r = pieces["row"].to_numpy()
    a = pieces["start"].to_numpy(dtype=float)
    L_den = before[r] + np.exp(eta[r]) * (_cumulative_at(times, dL0, a) - L0_start[r])
    L_num = np.zeros(len(pieces))
    p_arm = arm_txt[r]
    for label, (t_a, h_a) in na.items():
        m = p_arm == label
        L_num[m] = _cumulative_at(t_a, h_a, a[m])
    sw = np.exp(L_den - L_num)
    pieces["sw"] = sw
    pieces["weight"] = sw
    diag = weight_diagnostics(pieces, arms, column="sw", label="stabilised")
    cut = None
    if truncate is not None:
        lo, hi = np.percentile(sw, [100.0 - truncate, truncate])
        pieces["weight"] = np.clip(sw, lo, hi)
        cut = (float(lo), float(hi))
        diag = pd.concat(
            [diag, weight_diagnostics(pieces, arms, column="weight", label="truncated")],
            ignore_index=True,
        )
    se = fit.se
    model = pd.DataFrame(
        {
            "term": names,
            "estimate": fit.coef,
            "std_error": se,
            "exp_estimate": np.exp(fit.coef),
            "n_dropouts": n_drop,
        }
    )
    return IPCWWeights(pieces, model, diag, n_drop, cut)


def weight_diagnostics(
    pieces: pd.DataFrame,
    arms: tuple[str, str],
    *,
    column: str = "sw",
    label: str = "stabilised",
) -> pd.DataFrame:
    """Mean, sd, min, percentiles and max of the weights over the pieces, by arm and overall,
    and the mean weighted by piece length (both should be near 1 for stabilised weights)."""
    rows = []
    arm_txt = pieces["arm"].astype(str).to_numpy()
    w_all = pieces[column].to_numpy(dtype=float)
    length = (pieces["stop"] - pieces["start"]).to_numpy(dtype=float)
    for group in [*arms, "all"]:
        m = np.ones(len(pieces), bool) if group == "all" else arm_txt == group
        if not m.any():
            continue
        w = w_all[m]
        row: dict[str, Any] = {
            "weights": label,
            "arm": group,
            "n_pieces": int(m.sum()),
            "n_participants": int(pieces.loc[m, ID].nunique()),
            "mean": float(w.mean()),
            "mean_time_weighted": float(np.average(w, weights=length[m])),
            "sd": float(w.std(ddof=1)) if w.size > 1 else float("nan"),
            "min": float(w.min()),
        }
        for q, v in zip(WEIGHT_PERCENTILES, np.percentile(w, WEIGHT_PERCENTILES), strict=True):
            row[f"p{q}"] = float(v)
        row["max"] = float(w.max())
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# The models
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IPCWOptions:
    """Options of the IPCW models."""

    informative_dropout: list[str] | None = option(
        None,
        doc="end_reason values that are informative dropout; default the config's "
        "informative_dropout (withdrawn)",
    )
    dropout_covariates: list[str] | None = option(
        None,
        doc="study covariates of the dropout model (beside arm and episodes so far); default "
        "every covariate column of the data",
    )
    truncate: float | None = option(
        None,
        minimum=50,
        maximum=100,
        exclusive_minimum=True,
        doc="truncate the weights at the (100 - q)-th and q-th percentiles",
    )


@dataclass(frozen=True)
class IPCWAGOptions(IPCWOptions):
    """Options of the IPCW Andersen-Gill model."""

    ties: Literal["efron", "breslow"] = option("efron", doc="ties of the Andersen-Gill fit")


@dataclass(frozen=True)
class IPCWNBOptions(IPCWOptions):
    """Options of the IPCW negative binomial model."""

    working_variance: Literal["negbin", "poisson"] = option(
        "negbin",
        doc="negbin: NB2 working variance per piece at the unweighted glm.nb theta; poisson: "
        "alpha = 0 (the same for any splitting of the rows; see the module docstring)",
    )


_ESTIMAND = (
    "ratio of the episode rates, intervention vs control, had nobody withdrawn (hypothetical "
    "strategy for informative dropout): rows weighted by stabilised inverse probabilities of "
    "remaining in the study, from a Cox model of the dropout hazard on arm, covariates and "
    "episodes so far (dropout at random given these); other ends of follow-up are censoring "
    "at random; robust errors clustered on participant, weights treated as known"
)
_EXTRAS = (
    ExtraTable(
        "weights",
        "IPCW stabilised weights over the person-time pieces, by arm (mean near 1 expected)",
    ),
    ExtraTable(
        "dropout_model",
        "Dropout model: Cox hazard ratios of informative dropout (arm, covariates, episodes so "
        "far)",
        "appendix",
    ),
    ExtraTable("comparison", "Unweighted and IPCW-weighted estimates side by side", "appendix"),
)


class _IPCWModel(Model):
    datasets: ClassVar[tuple[str, ...]] = ("counting_process", "participants")

    def describe(self, spec: ModelSpec | None = None) -> ModelDescription:
        """The description, with the dropout reasons of `spec` and the hypothetical strategy
        for informative dropout (IPCW) beside the while-alive strategy for a terminal event."""
        desc = super().describe(spec)
        opts = {} if spec is None else spec.options
        reasons = opts.get("informative_dropout") or list(DEFAULT_INFORMATIVE)
        named = " or ".join(str(r) for r in reasons)
        dropout = (
            f"hypothetical: as if nobody had dropped out ({named}), assuming dropout is at "
            "random given arm, covariates and episodes so far (inverse-probability-of-"
            "censoring weights); other ends of follow-up are censoring at random"
        )
        strategies = tuple(
            (event, dropout if event == "informative dropout" else text)
            for event, text in desc.strategies
        )
        estimand = desc.estimand.replace(
            "had nobody withdrawn", f"had nobody dropped out ({named})"
        )
        return replace(desc, strategies=strategies, estimand=estimand)

    Options: ClassVar[type] = IPCWOptions
    group: ClassVar[str] = "marginal rate"
    effect_measure: ClassVar[str | None] = "rate ratio"
    extras: ClassVar[tuple[ExtraTable, ...]] = _EXTRAS
    claim_metrics: ClassVar[tuple[str, ...]] = ("rate_reduction",)

    def _weights(
        self, spec: ModelSpec, cp: pd.DataFrame, participants: pd.DataFrame
    ) -> tuple[IPCWWeights, pd.DataFrame, str]:
        """Checks, complete cases and the weights; returns them, the rows used and a note."""
        counts = {"n_participants": int(cp[ID].nunique()), "n_events": int(cp["event"].sum())}
        arms = (spec.arms["control"], spec.arms["intervention"])
        present = set(cp["arm"].dropna().astype(str))
        if not all(a in present for a in arms):
            listed = ", ".join(sorted(present)) or "none"
            raise NotEstimable(f"only one arm in the data ({listed})", **counts)
        opts = spec.options
        reasons = opts.get("informative_dropout") or list(DEFAULT_INFORMATIVE)
        covs = opts.get("dropout_covariates")
        if covs is None:
            covs = [c for c in cp.columns if c not in RESERVED_COLUMNS]
        unknown = [c for c in covs if c not in cp.columns]
        if unknown:
            raise NotEstimable(f"dropout covariate(s) not in the data: {', '.join(unknown)}")
        cp = cp.sort_values([ID, "start"], kind="mergesort").reset_index(drop=True)
        # Complete cases (participants) on the dropout covariates and the formula's variables.
        bad_rows = cp[covs].isna().any(axis=1) if covs else pd.Series(False, index=cp.index)
        X_out, _ = design(spec.formula, cp, intercept=False)
        bad_rows |= ~cp.index.isin(X_out.index)
        bad_ids = set(cp.loc[bad_rows, ID])
        note = ""
        if bad_ids:
            cp = cp[~cp[ID].isin(bad_ids)].reset_index(drop=True)
            note = f"{len(bad_ids)} participant(s) with missing covariates left out"
        drop = dropout_rows(cp, participants, reasons)
        w = ipcw_weights(cp, drop, list(covs), arms=arms, truncate=opts.get("truncate"))
        if w.n_dropouts == 0:
            note = "; ".join(filter(None, [note, "no informative dropout: all weights 1"]))
        else:
            note = "; ".join(
                filter(None, [note, f"{w.n_dropouts} informative dropouts ({', '.join(reasons)})"])
            )
        return w, cp, note


def _comparison(names, unweighted, weighted) -> pd.DataFrame:
    (b0, se0), (b1, se1) = unweighted, weighted
    return pd.DataFrame(
        {
            "term": names,
            "estimate_unweighted": b0,
            "std_error_unweighted": se0,
            "estimate_ipcw": b1,
            "std_error_ipcw": se1,
            "exp_estimate_unweighted": np.exp(b0),
            "exp_estimate_ipcw": np.exp(b1),
        }
    )


def _extras(w: IPCWWeights, comparison: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {"weights": w.diagnostics, "dropout_model": w.dropout_model, "comparison": comparison}


@register
class IPCWAndersenGill(_IPCWModel):
    """Andersen-Gill weighted by stabilised inverse probabilities of not having dropped out."""

    Options: ClassVar[type] = IPCWAGOptions
    kind: ClassVar[str] = "ipcw_andersen_gill"
    title: ClassVar[str] = "Andersen-Gill, IPCW for informative dropout"
    estimand: ClassVar[str] = _ESTIMAND
    reference: ClassVar[str] = (
        "Robins and Finkelstein (2000); Lin, Wei, Yang and Ying (2000); Cook and Lawless (2007)"
    )
    r_call: ClassVar[str] = (
        "coxph(Surv(start, stop, event) ~ arm + cluster(participant_id), weights = sw) on the "
        "rows split at the dropout times"
    )

    def fit(
        self, spec: ModelSpec, *, counting_process: pd.DataFrame, participants: pd.DataFrame
    ) -> ModelResult:
        w, cp, note = self._weights(spec, counting_process, participants)
        pieces = w.pieces
        ties = spec.options.get("ties", "efron")
        X, names = design(spec.formula, pieces, intercept=False)
        fits = []
        for weights in (None, pieces["weight"].to_numpy(dtype=float)):
            fits.append(
                coxph_fit(
                    X.to_numpy(),
                    pieces["stop"].to_numpy(dtype=float),
                    pieces["event"].to_numpy(),
                    start=pieces["start"].to_numpy(dtype=float),
                    cluster=pieces[ID].to_numpy(),
                    ties=ties,
                    names=names,
                    weights=weights,
                )
            )
        plain, fit = fits
        counts = {"n_participants": int(cp[ID].nunique()), "n_events": int(cp["event"].sum())}
        # A coefficient running off to infinity (no episodes in one arm...): the failed row
        # (recurstudy.models.monotone), for the weighted fit or its unweighted comparison.
        infinite = None
        if fit.infinite is not None and plain.infinite is not None:
            infinite = fit.infinite | plain.infinite
        raise_if_monotone(
            spec, names, infinite, fit.no_event_level, counts, X.to_numpy(), measure="rate ratio"
        )
        assert fit.robust_se is not None and plain.robust_se is not None
        message = "; ".join(filter(None, [fit.message, note]))
        table = tidy(
            spec,
            names,
            fit.coef,
            fit.robust_se,
            robust=True,
            log_likelihood=fit.loglik[1],
            converged=fit.converged,
            message=message,
            **counts,
        )
        comparison = _comparison(names, (plain.coef, plain.robust_se), (fit.coef, fit.robust_se))
        return ModelResult(table, _extras(w, comparison), converged=fit.converged, message=message)


def weighted_nb_rate(
    X: np.ndarray,
    y: np.ndarray,
    offset: np.ndarray,
    weights: np.ndarray,
    cluster: np.ndarray,
    alpha: float,
    *,
    max_iter: int = 100,
    tol: float = 1e-11,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Solve sum w x (y - mu) / (1 + alpha mu) = 0 (mu = exp(x b + offset)), the NB2 GLM score
    at fixed alpha with prior weights w, by Fisher scoring (R's glm IRLS for
    ``negative.binomial(theta)`` with ``weights = w``): information sum w mu / (1 + alpha mu) x x'.
    Stops when every step is below `tol` (1 + |b|).  Returns (b, the participant-clustered
    sandwich variance, converged).  Hand-written because statsmodels' IRLS refits a least-squares
    problem per iteration (tens of seconds on a million pieces)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.asarray(weights, dtype=float)
    b = np.zeros(X.shape[1])
    # start: the intercept (first column, if constant) at the weighted crude log rate
    if X.shape[1] and np.all(X[:, 0] == 1.0):
        b[0] = np.log(max((w @ y) / (w @ np.exp(offset)), 1e-300))
    converged = False
    for _ in range(max_iter):
        mu = np.exp(X @ b + offset)
        v = 1.0 + alpha * mu
        info = X.T @ (X * (w * mu / v)[:, None])
        step = np.linalg.solve(info, X.T @ (w * (y - mu) / v))
        b = b + step
        if not np.all(np.isfinite(b)):
            break
        if np.all(np.abs(step) <= tol * (1.0 + np.abs(b))):
            converged = True
            break
    mu = np.exp(X @ b + offset)
    v = 1.0 + alpha * mu
    bread = np.linalg.inv(X.T @ (X * (w * mu / v)[:, None]))
    scores = X * (w * (y - mu) / v)[:, None]
    var = sandwich(bread, scores, cluster)
    return b, var, converged and bool(np.all(np.isfinite(b)))


def glm_nb_theta(
    X: np.ndarray, y: np.ndarray, offset: np.ndarray, max_iter: int = 50
) -> tuple[float, np.ndarray, bool]:
    """MASS::glm.nb's alternation on participant counts: a Poisson start, then the NB2 GLM at
    fixed theta (:func:`weighted_nb_rate`, weights 1) and ``theta.ml`` at its fitted means
    (:func:`recurstudy.models.counts.theta_ml_se`) in turn until theta and the coefficients
    settle (relative change < 1e-10).  Returns (theta, coefficients, converged).

    Used for the dispersion of the IPCW negative binomial model instead of the counts module's
    statsmodels route, which on some cohorts stops at theta -> 0 (e.g. the 2000-participant
    simulated cohort of tests/test_ipcw.py, where R's glm.nb gives 0.528)."""
    from recurstudy.models.counts import theta_ml_se

    one = np.zeros(y.size, dtype=np.int64)
    b, _, _ = weighted_nb_rate(X, y, offset, np.ones(y.size), one, 0.0)
    theta = theta_ml_se(y, np.exp(X @ b + offset))[0]
    for _ in range(max_iter):
        b_new, _, ok = weighted_nb_rate(X, y, offset, np.ones(y.size), one, 1.0 / theta)
        theta_new = theta_ml_se(y, np.exp(X @ b_new + offset))[0]
        done = abs(theta_new - theta) <= 1e-10 * theta and np.all(
            np.abs(b_new - b) <= 1e-10 * (1.0 + np.abs(b))
        )
        b, theta = b_new, theta_new
        if done and ok:
            return float(theta), b, True
    return float(theta), b, False


@register
class IPCWNegBin(_IPCWModel):
    """NB2 rate model on the person-time pieces, weighted by stabilised IPCW weights."""

    Options: ClassVar[type] = IPCWNBOptions
    kind: ClassVar[str] = "ipcw_negbin"
    title: ClassVar[str] = "Negative binomial rate model, IPCW for informative dropout"
    estimand: ClassVar[str] = _ESTIMAND.replace(
        "robust errors",
        "NB2 working variance at the unweighted glm.nb dispersion, robust errors",
    )
    reference: ClassVar[str] = "Robins, Rotnitzky and Zhao (1994); Lawless (1987)"
    r_call: ClassVar[str] = (
        "glm(event ~ arm + offset(log(stop - start)), family = MASS::negative.binomial(theta), "
        "weights = sw) on the split rows, theta from MASS::glm.nb on the counts; "
        "sandwich::vcovCL(fit, cluster = ~participant_id, type = 'HC0', cadjust = FALSE)"
    )

    def fit(
        self, spec: ModelSpec, *, counting_process: pd.DataFrame, participants: pd.DataFrame
    ) -> ModelResult:
        w, cp, note = self._weights(spec, counting_process, participants)
        counts_kw = {"n_participants": int(cp[ID].nunique()), "n_events": int(cp["event"].sum())}
        # The unweighted glm.nb on the participants' counts gives the dispersion.
        per = cp.groupby(ID, sort=False)
        counts = per.first().drop(columns=["event", "start", "stop"]).reset_index()
        y_c = per["event"].sum().to_numpy(dtype=float)
        exposure = (per["stop"].sum() - per["start"].sum()).to_numpy(dtype=float)
        arm_c = counts["arm"].astype(str).to_numpy()
        for label in (spec.arms["control"], spec.arms["intervention"]):
            if y_c[arm_c == label].sum() == 0:  # as negbin: no root of the score equations
                raise NotEstimable(
                    f"no episodes in the {label} arm: the rate ratio is not estimable (separation)",
                    **counts_kw,
                )
        Xc, _ = design(spec.formula, counts, intercept=True)
        theta, _, ok = glm_nb_theta(Xc.to_numpy(), y_c, np.log(exposure))
        if not ok or not np.isfinite(theta) or theta <= 0:
            raise NotEstimable("the unweighted negative binomial fit (theta) did not converge")
        alpha = 1.0 / theta if spec.options.get("working_variance", "negbin") == "negbin" else 0.0
        pieces = w.pieces
        X, names = design(spec.formula, pieces, intercept=True)
        y = pieces["event"].to_numpy(dtype=float)
        offset = np.log((pieces["stop"] - pieces["start"]).to_numpy(dtype=float))
        cluster = pieces[ID].to_numpy()
        b0, v0, _ = weighted_nb_rate(X.to_numpy(), y, offset, np.ones(y.size), cluster, alpha)
        weights = pieces["weight"].to_numpy(dtype=float)
        b, v, converged = weighted_nb_rate(X.to_numpy(), y, offset, weights, cluster, alpha)
        se, se0 = np.sqrt(np.diag(v)), np.sqrt(np.diag(v0))
        message = "; ".join(filter(None, [note, f"theta = {theta:.4g} from the unweighted glm.nb"]))
        table = tidy(
            spec,
            names,
            b,
            se,
            robust=True,
            log_likelihood=None,
            converged=converged,
            message=message,
            **counts_kw,
        )
        extras = _extras(w, _comparison(names, (b0, se0), (b, se)))
        extras["dropout_model"] = w.dropout_model
        return ModelResult(table, extras, converged=converged, message=message)
