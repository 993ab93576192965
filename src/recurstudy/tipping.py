"""Tipping-point analysis of informative dropout: how bad would the episodes after withdrawal have
to be for a claim's verdict to change?

For each participant whose follow-up ended with an informative reason (the config's
``informative_dropout``, default ``[withdrawn]``), the episodes between their dropout day d_i
and the planned end of follow-up T are imputed (multiple imputation, a pattern-mixture /
delta-adjustment model, not at random):

* the post-dropout rate is delta times the control arm's episode rate, in either arm (delta = 1:
  a withdrawn participant goes on like an average control participant, "jump to reference" for
  the intervention arm; delta > 1: worse than control);
* the control rate exp(b0) is the crude ``MASS::glm.nb`` fit on the observed counts
  (``n_episodes ~ arm``, offset log exposure); each imputation m draws b0_m ~ N(b0, SE(b0)^2)
  (approximately proper imputation: the rate's uncertainty enters the between-imputation
  variance); the dispersion theta is held at its estimate;
* participant i's count is gamma-Poisson: Z_i ~ Gamma(theta, 1 / theta) (mean 1, the NB2
  heterogeneity of the fit; a fresh draw, not conditioned on the participant's own history) and
  K_i = F^-1(U_i) of the Poisson(delta exp(b0_m) Z_i (T - d_i)) distribution, with the same
  uniforms U_i for every delta (common random numbers: the curve over delta is smooth and K_i
  increases with delta); the K_i episode days are uniform on (d_i, T] (continuous times), and
  the time after dropout is all at risk (no episode durations or washout).

The claim's own model is refitted on each completed data set (the counts and the counting
process with the imputed episodes, and the participants with the withdrawals marked
``completed``), and the M estimates of the log ratio are combined by Rubin's rules
(:func:`rubin`): Q = mean q_m, W = mean se_m^2, B = var(q_m), T = W + (1 + 1/M) B, with
Barnard and Rubin's (1999) degrees of freedom (complete-data df = participants - terms).
The verdict at each delta is the project's rule (:func:`recurstudy.claims.verdict`, reused, with
the claim's margin and an unadjusted TOST p-value, as the sensitivity agreement table does) on Q
and sqrt(T): it uses normal quantiles (the df column shows how far that approximation is
stretched; with B = 0 it is the observed-data verdict).  The reference verdict is the same rule
on the observed data (no imputation: dropout at random); ``tipping_delta`` is the smallest delta
of the grid whose verdict differs from it (NaN: no change over the grid).

Planned end of follow-up T (days since enrolment): ``tipping_point.planned_followup_days`` if
set; otherwise the longest observed follow-up (last ``stop``) of the participants whose
``end_reason`` is ``completed`` (the contract has no per-participant planned end; with staggered
entry and a common calendar cut-off this overstates T for late enrolees, so set the key).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.claims import (
    claim_model,
    interval,
    ordered_claims,
    to_reduction,
    verdict,
    z_quantile,
)
from recurstudy.lazy import lazy_import
from recurstudy.models import ModelSpec, fit_spec, get_model

stats = lazy_import("scipy.stats")

ID = "participant_id"
DEFAULT_INFORMATIVE = ("withdrawn",)
RATIO_METRICS = ("rate_reduction", "hazard_reduction")

TIPPING_COLUMNS = [
    "claim_id",
    "model",
    "delta",
    "imputations",
    "estimate",
    "conf_low",
    "conf_high",
    "log_ratio",
    "std_error",
    "within_variance",
    "between_variance",
    "df",
    "fmi",
    "verdict",
    "reason",
    "reference_verdict",
    "tipping_delta",
    "n_imputed_participants",
    "mean_imputed_episodes",
    "planned_followup_days",
    "note",
]

__all__ = [
    "TIPPING_COLUMNS",
    "RubinResult",
    "complete_data",
    "plot_tipping_point",
    "rubin",
    "tipping_point",
    "tipping_summary",
]


# ------------------------------------------------------------------------------------------------
# Rubin's rules
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RubinResult:
    """Rubin's rules for one scalar: pooled estimate, total variance, its parts, Barnard-Rubin
    degrees of freedom and the fraction of missing information."""

    estimate: float
    variance: float
    within: float
    between: float
    df: float
    fmi: float
    imputations: int

    @property
    def std_error(self) -> float:
        """sqrt of the total variance."""
        return math.sqrt(self.variance)


def rubin(
    estimates: Sequence[float], variances: Sequence[float], df_complete: float = math.inf
) -> RubinResult:
    """Combine M completed-data estimates and variances (Rubin 1987; Barnard and Rubin 1999).

    T = W + (1 + 1/M) B; lambda = (1 + 1/M) B / T; nu_old = (M - 1) / lambda^2;
    nu_obs = (nu_com + 1) / (nu_com + 3) nu_com (1 - lambda); df = 1 / (1/nu_old + 1/nu_obs)
    (nu_old alone when nu_com is infinite; inf when B = 0 and nu_com is infinite).  fmi is
    (r + 2 / (df + 3)) / (r + 1) with r = (1 + 1/M) B / W."""
    q = np.asarray(estimates, dtype=float)
    u = np.asarray(variances, dtype=float)
    m = q.size
    if m < 1 or u.size != m:
        raise ValueError("need one variance per estimate and at least one imputation")
    qbar = float(q.mean())
    w = float(u.mean())
    b = float(q.var(ddof=1)) if m > 1 else 0.0
    t = w + (1.0 + 1.0 / m) * b
    lam = (1.0 + 1.0 / m) * b / t if t > 0 else 0.0
    inv = 0.0
    if lam > 0 and m > 1:
        inv += lam**2 / (m - 1)
    if math.isfinite(df_complete):
        nu_obs = (df_complete + 1.0) / (df_complete + 3.0) * df_complete * (1.0 - lam)
        inv += 1.0 / nu_obs if nu_obs > 0 else math.inf
    df = 1.0 / inv if inv > 0 else math.inf
    r = (1.0 + 1.0 / m) * b / w if w > 0 else math.inf
    fmi = (r + 2.0 / (df + 3.0)) / (r + 1.0) if math.isfinite(r) else 1.0
    return RubinResult(qbar, t, w, b, df, fmi, m)


# ------------------------------------------------------------------------------------------------
# Imputation
# ------------------------------------------------------------------------------------------------


def planned_end(
    cp: pd.DataFrame, participants: pd.DataFrame, planned_followup_days: float | None
) -> float:
    """T: the configured planned follow-up, else the longest follow-up of those who completed
    (else of everyone)."""
    if planned_followup_days is not None:
        return float(planned_followup_days)
    last = cp.groupby(ID, sort=False)["stop"].max()
    if "end_reason" in participants.columns:
        done = participants.loc[participants["end_reason"].astype(str) == "completed", ID]
        if last.index.isin(done).any():
            return float(last[last.index.isin(done)].max())
    return float(last.max())


@dataclass(frozen=True)
class Dropouts:
    """The informative dropouts with time left before the planned end."""

    ids: np.ndarray  # participant ids
    end: np.ndarray  # d_i, the stop of their last row
    remaining: np.ndarray  # T - d_i > 0
    planned: float


def informative_dropouts(
    cp: pd.DataFrame, participants: pd.DataFrame, reasons: Sequence[str], planned: float
) -> Dropouts:
    """Who is imputed: an informative end_reason and last stop before T."""
    if "end_reason" not in participants.columns:
        raise ValueError(
            "the participants table has no end_reason column: informative dropout cannot be "
            "told from administrative censoring"
        )
    why = participants.set_index(ID)["end_reason"].astype("string")
    ids = why[why.isin([str(r) for r in reasons])].index
    last = cp.groupby(ID, sort=True)["stop"].max()
    last = last[last.index.isin(ids)]
    last = last[last < planned]
    d = last.to_numpy(dtype=float)
    return Dropouts(last.index.to_numpy(), d, planned - d, planned)


@dataclass(frozen=True)
class Draws:
    """One imputation's random numbers, shared by every delta (common random numbers)."""

    log_rate: float  # b0_m
    frailty: np.ndarray  # Z_i
    uniform: np.ndarray  # U_i for the Poisson inverse CDF
    seed: tuple[int, int]


def draw(
    drop: Dropouts, log_rate: float, se_log_rate: float, theta: float, seed: int, m: int
) -> Draws:
    """The random numbers of imputation m (streams seeded [seed, m, k], k = 0, 1, 2)."""
    g0 = np.random.default_rng([seed, m, 0])
    b0 = float(log_rate + se_log_rate * g0.standard_normal())
    z = np.random.default_rng([seed, m, 1]).gamma(theta, 1.0 / theta, drop.ids.size)
    u = np.random.default_rng([seed, m, 2]).random(drop.ids.size)
    return Draws(b0, z, u, (seed, m))


def complete_data(
    cp: pd.DataFrame,
    counts: pd.DataFrame,
    participants: pd.DataFrame,
    drop: Dropouts,
    draws: Draws,
    delta: float,
) -> tuple[dict[str, pd.DataFrame], int]:
    """The completed counting process, counts and participants for one imputation and delta,
    and the number of imputed episodes."""
    mean = delta * math.exp(draws.log_rate) * draws.frailty * drop.remaining
    k = stats.poisson.ppf(draws.uniform, mean).astype(np.int64)
    k = np.where(mean > 0, k, 0)
    n_new = int(k.sum())
    # episode times: uniform on (d_i, T], sorted within participant (stream [seed, m, 3])
    g = np.random.default_rng([*draws.seed, 3])
    owner = np.repeat(np.arange(drop.ids.size), k)
    times = drop.end[owner] + drop.remaining[owner] * (1.0 - g.random(n_new))
    order = np.lexsort((times, owner))
    owner, times = owner[order], times[order]

    cp = cp.sort_values([ID, "start"], kind="mergesort").reset_index(drop=True)
    last = cp.groupby(ID, sort=False).tail(1)
    last = last[last[ID].isin(drop.ids)].set_index(ID).loc[drop.ids]
    censored = last["event"].to_numpy() == 0
    # Each dropout's new rows run over the boundaries s0 < t_1 < ... < t_K < T: a censored last
    # row (s, d] is replaced (s0 = s, same episode number, so that episode-stratified models keep
    # their numbering); after an event row the new rows start at d with the next number.
    s0 = np.where(censored, last["start"].to_numpy(dtype=float), drop.end)
    e0 = last["episode"].to_numpy() + np.where(censored, 0, 1)
    starts = np.concatenate([s0, times])
    who = np.concatenate([np.arange(drop.ids.size), owner])
    o = np.lexsort((starts, who))
    starts, who = starts[o], who[o]
    has_next = np.append(who[1:] == who[:-1], False)
    stops = np.where(has_next, np.roll(starts, -1), drop.planned)
    rank = np.arange(who.size) - np.searchsorted(who, who, side="left")
    keep = stops > starts
    new = last.reset_index().iloc[who[keep]].reset_index(drop=True)
    new["start"] = starts[keep]
    new["stop"] = stops[keep]
    new["event"] = has_next[keep].astype(np.int64)
    new["episode"] = (e0[who] + rank)[keep]
    old = cp.drop(
        index=cp.index[
            cp.index.isin(cp.groupby(ID, sort=False).tail(1).index)
            & cp[ID].isin(drop.ids[censored])
        ]
    )
    old = old.astype({"start": float, "stop": float})
    out = pd.concat([old, new[cp.columns]], ignore_index=True)
    out = out.sort_values([ID, "start"], kind="mergesort").reset_index(drop=True)
    if "gap" in out.columns:
        out["gap"] = out["stop"] - out["start"]

    c = counts.copy()
    add_n = pd.Series(k, index=drop.ids)
    add_t = pd.Series(drop.remaining, index=drop.ids)
    c["n_episodes"] = c["n_episodes"] + c[ID].map(add_n).fillna(0).astype(np.int64)
    c["exposure_days"] = c["exposure_days"] + c[ID].map(add_t).fillna(0.0)
    p = participants.copy()
    if "end_reason" in p.columns:
        p["end_reason"] = p["end_reason"].astype(object)
        p.loc[p[ID].isin(drop.ids), "end_reason"] = "completed"
    return {"counting_process": out, "counts": c, "participants": p}, n_new


# ------------------------------------------------------------------------------------------------
# The analysis
# ------------------------------------------------------------------------------------------------


def _control_rate(counts: pd.DataFrame, arms: dict[str, str]) -> tuple[float, float, float]:
    """(log control rate, its SE, theta) of the crude glm.nb (``n_episodes ~ arm``, offset log
    exposure) on the observed counts, by MASS::glm.nb's alternation
    (:func:`recurstudy.models.ipcw.glm_nb_theta`); the SE is glm.nb's model-based one."""
    from recurstudy.models.ipcw import glm_nb_theta

    c = counts[pd.to_numeric(counts["exposure_days"], errors="coerce") > 0]
    y = c["n_episodes"].to_numpy(dtype=float)
    offset = np.log(c["exposure_days"].to_numpy(dtype=float))
    z = (c["arm"].astype(str) == arms["intervention"]).to_numpy(dtype=float)
    X = np.column_stack([np.ones(y.size), z])
    theta, b, ok = glm_nb_theta(X, y, offset)
    if not ok or not np.isfinite(theta) or theta <= 0:
        raise ValueError("the imputation model (crude glm.nb) did not converge")
    mu = np.exp(X @ b + offset)
    info = X.T @ (X * (mu / (1.0 + mu / theta))[:, None])
    se = float(np.sqrt(np.linalg.inv(info)[0, 0]))
    return float(b[0]), se, float(theta)


def _arm_row(res: Any, term: str) -> tuple[float, float, int, int] | None:
    rows = res.table[res.table["term"] == term]
    if rows.empty or not bool(rows.iloc[0]["converged"]):
        return None
    r = rows.iloc[0]
    x, se = float(r["estimate"]), float(r["std_error"])
    if not (math.isfinite(x) and math.isfinite(se) and se > 0):
        return None
    return x, se, int(r["n_participants"]), len(res.table)


def tipping_point(
    config: Mapping[str, Any],
    specs: Mapping[str, ModelSpec],
    data: Mapping[str, pd.DataFrame],
) -> pd.DataFrame:
    """The tipping-point table (:data:`TIPPING_COLUMNS`) of every rate or hazard claim whose
    model is a marginal-rate ratio model fitted on the counts or the counting process.

    `config` needs ``claims``, ``arms``, ``tipping_point`` (deltas, imputations, seed,
    planned_followup_days) and optionally ``informative_dropout``; `specs` the configured
    model specs by name; `data` the observed ``counting_process``, ``counts`` and
    ``participants``."""
    tp = dict(config.get("tipping_point") or {})
    deltas = sorted(float(d) for d in tp.get("deltas", [0.5, 1.0, 1.5, 2.0, 3.0]))
    m_imp = int(tp.get("imputations", 20))
    seed = int(tp.get("seed", 20261204))
    reasons = list(config.get("informative_dropout") or DEFAULT_INFORMATIVE)
    arms = dict(config.get("arms") or {"control": "control", "intervention": "intervention"})
    cp, counts, participants = data["counting_process"], data["counts"], data["participants"]
    rows: list[dict[str, Any]] = []
    todo = []
    for claim in ordered_claims(config):
        name = claim_model(claim)
        base: dict[str, Any] = {"claim_id": claim["id"], "model": name}
        if claim["metric"] not in RATIO_METRICS:
            continue
        spec = specs.get(name)
        if spec is None:
            rows.append({**base, "verdict": "not estimable", "note": "model not configured"})
            continue
        model = get_model(spec.kind)
        desc = model.describe(spec)
        if desc.group != "marginal rate" or not set(model.datasets) <= set(data):
            note = "tipping point needs a marginal-rate model on the counts or counting process"
            rows.append({**base, "verdict": "not estimable", "note": note})
            continue
        todo.append((claim, spec, model))
    if not todo:
        return pd.DataFrame(rows).reindex(columns=TIPPING_COLUMNS)

    def unserved(verdict: str, why: str) -> pd.DataFrame:
        """Every claim to serve gets a row saying why the analysis did not run."""
        rows.extend(
            {
                "claim_id": c["id"],
                "model": spec.name,
                "verdict": verdict,
                "note": f"{verdict}: {why}",
            }
            for c, spec, _ in todo
        )
        return pd.DataFrame(rows).reindex(columns=TIPPING_COLUMNS)

    if "end_reason" not in participants.columns:  # optional in the data contract
        return unserved(
            "not done",
            "the participants table has no end_reason column, so informative dropouts cannot "
            "be told from administrative censoring",
        )
    try:
        planned = planned_end(cp, participants, tp.get("planned_followup_days"))
        drop = informative_dropouts(cp, participants, reasons, planned)
        log_rate, se_rate, theta = _control_rate(counts, arms)
    except np.linalg.LinAlgError:  # before ValueError, of which it is a subclass
        return unserved("not estimable", "the imputation model is singular")
    except ValueError as exc:
        # a small or degenerate cohort (the imputation model does not converge): each claim
        # says why, the workflow goes on
        return unserved("not estimable", str(exc))

    def fit(spec: ModelSpec, model: Any, datasets: Mapping[str, pd.DataFrame]) -> Any:
        return fit_spec(spec, {d: datasets[d] for d in model.datasets})

    for claim, spec, model in todo:
        claimed = float(claim["claimed"])
        margin = claim.get("margin")
        margin = 0.10 if margin is None else float(margin)
        term = spec.intervention_term
        ref = _arm_row(fit(spec, model, data), term)
        base = {"claim_id": claim["id"], "model": spec.name}
        if ref is None:
            rows.append({**base, "verdict": "not estimable", "note": "no observed-data estimate"})
            continue
        ref_verdict = verdict(ref[0], ref[1], claimed, margin, "log_ratio")[0]
        claim_rows = []
        for delta in deltas:
            q, u, n_new = [], [], []
            df_com = math.inf
            for m in range(m_imp):
                dr = draw(drop, log_rate, se_rate, theta, seed, m)
                completed, k = complete_data(cp, counts, participants, drop, dr, delta)
                got = _arm_row(fit(spec, model, completed), term)
                if got is None:
                    break
                q.append(got[0])
                u.append(got[1] ** 2)
                n_new.append(k)
                df_com = float(got[2] - got[3])
            row: dict[str, Any] = {
                **base,
                "delta": delta,
                "imputations": m_imp,
                "reference_verdict": ref_verdict,
                "n_imputed_participants": int(drop.ids.size),
                "planned_followup_days": planned,
            }
            if len(q) < m_imp:
                row.update(verdict="not estimable", note="a completed-data fit failed")
                claim_rows.append(row)
                continue
            pooled = rubin(q, u, df_com)
            lo, hi = interval(pooled.estimate, pooled.std_error, z_quantile(0.975), "log_ratio")
            v, why = verdict(pooled.estimate, pooled.std_error, claimed, margin, "log_ratio")
            row.update(
                estimate=to_reduction(pooled.estimate, "log_ratio"),
                conf_low=lo,
                conf_high=hi,
                log_ratio=pooled.estimate,
                std_error=pooled.std_error,
                within_variance=pooled.within,
                between_variance=pooled.between,
                df=pooled.df,
                fmi=pooled.fmi,
                verdict=v,
                reason=why,
                mean_imputed_episodes=float(np.mean(n_new)),
                note="" if drop.ids.size else "no informative dropout before the planned end",
            )
            claim_rows.append(row)
        changed = [r["delta"] for r in claim_rows if r["verdict"] != ref_verdict]
        tip = min(changed) if changed else math.nan
        for r in claim_rows:
            r["tipping_delta"] = tip
        rows.extend(claim_rows)
    return pd.DataFrame(rows).reindex(columns=TIPPING_COLUMNS)


def tipping_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: the reference verdict and the smallest delta that changes it (or
    "no change over the grid")."""
    out = []
    for cid, g in table.groupby("claim_id", sort=False):
        tip = g["tipping_delta"].iloc[0]
        grid = g["delta"].dropna()
        if not len(grid):  # not done or not estimable: say why, never "no change"
            notes = g["note"].dropna().astype(str)
            what = notes.iloc[0] if len(notes) else str(g["verdict"].iloc[0])
        elif isinstance(tip, float) and math.isfinite(tip):
            changed = g.loc[g["delta"] == tip, "verdict"].iloc[0]
            what = f"verdict changes at delta = {tip:g} ({changed})"
        else:
            what = f"no change over the grid ({grid.min():g} to {grid.max():g})"
        out.append(
            {
                "claim_id": cid,
                "model": g["model"].iloc[0],
                "reference_verdict": g["reference_verdict"].iloc[0],
                "tipping_delta": tip,
                "tipping_point": what,
            }
        )
    return pd.DataFrame(out)


def plot_tipping_point(table: pd.DataFrame, claims: Mapping[str, float] | None = None):
    """The reduction (1 - ratio) with its 95% interval against delta, one panel per claim, the
    claimed value as a dashed line and the tipping delta as a dotted vertical line.
    `claims` maps claim_id to the claimed reduction. Returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ok = table.dropna(subset=["delta", "estimate"])
    ids = list(dict.fromkeys(ok["claim_id"]))
    fig, axes = plt.subplots(1, max(len(ids), 1), figsize=(5.0 * max(len(ids), 1), 3.6))
    axes = np.atleast_1d(axes)
    if not ids:
        axes[0].text(0.5, 0.5, "no tipping-point analysis", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for ax, cid in zip(axes, ids, strict=False):
        g = ok[ok["claim_id"] == cid].sort_values("delta")
        x = g["delta"].to_numpy(dtype=float)
        ax.fill_between(
            x, 100 * g["conf_low"], 100 * g["conf_high"], alpha=0.25, label="95% interval"
        )
        ax.plot(x, 100 * g["estimate"], marker="o", label="reduction (MI, Rubin)")
        if claims and cid in claims:
            ax.axhline(100 * claims[cid], linestyle="--", color="k", label="claimed")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        tip = g["tipping_delta"].iloc[0]
        if isinstance(tip, float) and math.isfinite(tip):
            ax.axvline(tip, linestyle=":", color="C3", label=f"verdict changes (delta = {tip:g})")
        ax.set_xlabel("delta: post-dropout rate / control rate")
        ax.set_ylabel("reduction (%)")
        ax.set_title(str(cid))
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def with_tipping_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with the ``tipping_point`` section's defaults filled in (for callers that build
    a config by hand)."""
    tp = {
        "enabled": True,
        "deltas": [0.5, 1.0, 1.5, 2.0, 3.0],
        "imputations": 20,
        "seed": 20261204,
        "planned_followup_days": None,
        **dict(config.get("tipping_point") or {}),
    }
    return {**dict(config), "tipping_point": tp}
