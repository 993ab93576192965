"""Per-site intervention effects, their random-effects meta-analysis, and the site-stratified
Andersen-Gill model.

A site's effect is the claim's model (its configured spec) fitted to that site's participants
only. A site is *not estimable*, with the reason in its row rather than left out, when it has
fewer than ``min_cell`` participants in an arm, no events, or a fit that does not converge.

The meta-analysis pools the estimable sites' log ratios ``y_i`` with variances ``v_i`` (their
squared standard errors) by DerSimonian and Laird (1986):

- fixed-effect weights ``w_i = 1 / v_i``, pooled ``y_F = sum(w y) / sum(w)``;
- Cochran's ``Q = sum(w (y - y_F)^2)`` on ``k - 1`` degrees of freedom (its chi-square p tests
  homogeneity);
- ``tau^2 = max(0, (Q - (k - 1)) / (sum(w) - sum(w^2) / sum(w)))``, the between-site variance of
  the true log ratios (method of moments);
- ``I^2 = max(0, (Q - (k - 1)) / Q)``, the share of the variation in the site estimates that is
  due to heterogeneity rather than chance;
- random-effects weights ``w*_i = 1 / (v_i + tau^2)``, pooled ``y_R = sum(w* y) / sum(w*)`` with
  SE ``1 / sqrt(sum(w*))`` and a Wald interval, exponentiated to the ratio scale.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.lazy import lazy_import
from recurstudy.models import ModelSpec, fit_spec

stats = lazy_import("scipy.stats")

ID = "participant_id"
EFFECT_COLUMNS = [
    "site",
    "model",
    "n_participants",
    "n_control",
    "n_intervention",
    "n_events",
    "estimable",
    "estimate",
    "std_error",
    "conf_low",
    "conf_high",
    "ratio",
    "ratio_conf_low",
    "ratio_conf_high",
    "message",
]
META_COLUMNS = [
    "model",
    "method",
    "k",
    "estimate",
    "std_error",
    "conf_low",
    "conf_high",
    "ratio",
    "ratio_conf_low",
    "ratio_conf_high",
    "tau2",
    "i2",
    "q",
    "q_df",
    "q_p_value",
]


NO_SITE = "(no site)"


def participant_sites(participants: pd.DataFrame) -> pd.Series:
    """Each participant's site label; a missing site (or no ``site`` column) is ``(no site)``,
    a site of its own, so that nobody drops out silently."""
    if "site" not in participants.columns:
        return pd.Series(NO_SITE, index=participants.index, dtype=object)
    site = participants["site"].astype(object)
    return site.where(site.notna(), NO_SITE).astype(str)


def site_slug(site: str) -> str:
    """A file-name-safe form of a site label (the ``{site}`` wildcard); distinct labels that
    would collide get their position appended by :func:`site_slugs`."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(site)).strip("._") or "site"
    return slug


def site_slugs(sites: Sequence[str]) -> dict[str, str]:
    """{slug: site label} for the sorted distinct `sites`, slugs made unique."""
    out: dict[str, str] = {}
    for i, site in enumerate(sorted({str(s) for s in sites})):
        slug = site_slug(site)
        if slug in out:
            slug = f"{slug}_{i}"
        out[slug] = site
    return out


def _events(data: Mapping[str, pd.DataFrame]) -> int:
    for name, col in (("counting_process", "event"), ("counts", "n_episodes")):
        df = data.get(name)
        if df is not None and col in df.columns:
            return int(df[col].sum())
    df = data.get("first_episode")
    if df is not None and "event" in df.columns:
        return int(df["event"].sum())
    return -1  # the model's datasets do not count events: let the fit decide


def subset(data: Mapping[str, pd.DataFrame], ids: set[str]) -> dict[str, pd.DataFrame]:
    """The datasets restricted to the participants `ids`."""
    return {
        k: (df[df[ID].astype(str).isin(ids)].reset_index(drop=True) if ID in df.columns else df)
        for k, df in data.items()
        if df is not None
    }


def site_effect(
    spec: ModelSpec,
    site: str,
    participants: pd.DataFrame,
    data: Mapping[str, pd.DataFrame],
    min_cell: int,
) -> pd.DataFrame:
    """The intervention effect in one site (one row of ``results/sites/effects.csv``): the log
    ratio, its SE and 95% interval as the model reports them (robust for Andersen-Gill, the
    model-based or robust SE the negative binomial is configured with), and the ratio."""
    people = participants[participants["site"].astype(str) == str(site)]
    arm = people["arm"].astype(str)
    n_c = int((arm == spec.arms["control"]).sum())
    n_i = int((arm == spec.arms["intervention"]).sum())
    sub = subset(data, set(people[ID].astype(str)))
    n_events = _events(sub)
    row: dict[str, Any] = {c: np.nan for c in EFFECT_COLUMNS}
    row.update(
        site=str(site),
        model=spec.name,
        n_participants=len(people),
        n_control=n_c,
        n_intervention=n_i,
        n_events=max(n_events, 0),
        estimable=False,
        message="",
    )
    if min(n_c, n_i) < min_cell:
        row["message"] = f"not estimable: fewer than {min_cell} participants in an arm"
    elif n_events == 0:
        row["message"] = "not estimable: no events"
    else:
        result = fit_spec(spec, sub)
        term = result.table[result.table["term"] == spec.intervention_term]
        ok = (
            not term.empty
            and bool(term["converged"].iloc[0])
            and np.isfinite(term["std_error"].iloc[0])
        )
        if not ok:
            reason = result.message or "no estimate"
            row["message"] = f"not estimable: {reason}"
        else:
            t = term.iloc[0]
            row.update(
                estimable=True,
                estimate=float(t["estimate"]),
                std_error=float(t["std_error"]),
                conf_low=float(t["conf_low"]),
                conf_high=float(t["conf_high"]),
                ratio=float(t["exp_estimate"]),
                ratio_conf_low=float(t["exp_conf_low"]),
                ratio_conf_high=float(t["exp_conf_high"]),
                message=str(t["message"]) if isinstance(t["message"], str) else "",
            )
    return pd.DataFrame([row], columns=EFFECT_COLUMNS)


def dersimonian_laird(
    estimate: Sequence[float], std_error: Sequence[float], conf_level: float = 0.95
) -> dict[str, float]:
    """DerSimonian-Laird random-effects pooling of log ratios (see the module docstring): the
    pooled log ratio, its SE and interval, tau^2, I^2, Q with its degrees of freedom and p."""
    y = np.asarray(estimate, dtype=float)
    v = np.asarray(std_error, dtype=float) ** 2
    k = len(y)
    if k == 0:
        raise ValueError("no estimable site to pool")
    w = 1.0 / v
    y_fixed = np.sum(w * y) / np.sum(w)
    q = float(np.sum(w * (y - y_fixed) ** 2))
    df = k - 1
    c = np.sum(w) - np.sum(w**2) / np.sum(w)
    tau2 = max(0.0, (q - df) / c) if k > 1 else 0.0
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    w_star = 1.0 / (v + tau2)
    pooled = float(np.sum(w_star * y) / np.sum(w_star))
    se = float(1.0 / np.sqrt(np.sum(w_star)))
    z = stats.norm.ppf(1.0 - (1.0 - conf_level) / 2.0)
    return {
        "k": k,
        "estimate": pooled,
        "std_error": se,
        "conf_low": pooled - z * se,
        "conf_high": pooled + z * se,
        "tau2": float(tau2),
        "i2": float(i2),
        "q": q,
        "q_df": df,
        "q_p_value": float(stats.chi2.sf(q, df)) if df > 0 else float("nan"),
    }


def meta_analysis(effects: pd.DataFrame) -> pd.DataFrame:
    """``results/sites/meta.csv``: the DerSimonian-Laird pooling of the estimable sites, one row
    per model (a row with k = 0 and no estimate when no site is estimable)."""
    rows = []
    for model, grp in effects.groupby("model", sort=False):
        ok = grp[grp["estimable"].astype(bool)]
        row: dict[str, Any] = {c: np.nan for c in META_COLUMNS}
        row.update(model=model, method="DerSimonian-Laird", k=0)
        if len(ok):
            row.update(dersimonian_laird(ok["estimate"], ok["std_error"]))
            row["ratio"] = float(np.exp(row["estimate"]))
            row["ratio_conf_low"] = float(np.exp(row["conf_low"]))
            row["ratio_conf_high"] = float(np.exp(row["conf_high"]))
        rows.append(row)
    return pd.DataFrame(rows, columns=META_COLUMNS)


def stratified_andersen_gill(
    spec: ModelSpec, counting_process: pd.DataFrame, participants: pd.DataFrame
) -> pd.DataFrame:
    """Andersen-Gill with a baseline intensity of its own per site (``strata = site``), robust
    errors clustered on participant, as R's ``coxph(Surv(start, stop, event) ~ arm +
    strata(site), cluster = participant_id)``: the within-site episode-rate ratio. The tidy
    table of :mod:`recurstudy.models` (model name ``<spec.name>_site_stratified``)."""
    from dataclasses import replace

    from recurstudy.models.base import NotEstimable, failed
    from recurstudy.models.survival import _fit_cox

    sites = participants[[ID, "site"]].astype({ID: str, "site": str})
    cp = counting_process.assign(**{ID: counting_process[ID].astype(str)})
    cp = cp.merge(sites, on=ID, how="left", validate="many_to_one")
    strat = replace(spec, name=f"{spec.name}_site_stratified", kind="andersen_gill")
    try:
        result = _fit_cox(strat, cp, stop="stop", start="start", strata="site", cluster=True)
    except NotEstimable as exc:  # one arm, no events...: the failed row, as fit_spec gives
        result = failed(strat, exc.reason, **exc.counts)
    return result.table
