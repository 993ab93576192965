"""Cluster (participant) bootstrap of the intervention effect.

Each replicate draws participants with replacement (every row of a drawn participant comes
along, under a new identifier per draw so that a participant drawn twice counts as two clusters)
and refits the claim's model with :func:`recurstudy.models.fit_spec` on the model's configured
spec. Replicate ``r`` uses the random stream ``SeedSequence([seed, r])``: the draws do not depend
on how the replicates are cut into chunk jobs, so the same seed gives the same bytes on one core
or on a cluster.

From the replicates' log ratios :func:`summarize_bootstrap` gives the percentile interval and,
with the leave-one-participant-out jackknife for the acceleration, Efron's BCa interval, beside
the model's own (robust) Wald interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.lazy import lazy_import
from recurstudy.models import ModelSpec, fit_spec, get_model

stats = lazy_import("scipy.stats")

ID = "participant_id"
BOOTSTRAP_COLUMNS = [
    "model",
    "method",
    "estimate",
    "conf_low",
    "conf_high",
    "std_error",
    "replicates",
    "converged",
    "seed",
]


def participant_ids(data: Mapping[str, pd.DataFrame]) -> np.ndarray:
    """The sorted participant identifiers of the analysis datasets (the resampling units)."""
    ids: set[str] = set()
    for df in data.values():
        if df is not None and ID in df.columns:
            ids.update(df[ID].astype(str).unique())
    return np.array(sorted(ids), dtype=object)


def resample(
    data: Mapping[str, pd.DataFrame], ids: np.ndarray, draw: np.ndarray
) -> dict[str, pd.DataFrame]:
    """The datasets restricted to the participants ``ids[draw]``, all rows of each, in draw
    order; the k-th draw of participant P is renamed ``P#k`` (k counts draws in the replicate)."""
    out: dict[str, pd.DataFrame] = {}
    new_ids = np.array([f"{ids[j]}#{k}" for k, j in enumerate(draw)], dtype=object)
    for name, df in data.items():
        if df is None or ID not in df.columns:
            out[name] = df
            continue
        rows = df.groupby(df[ID].astype(str), sort=False).indices
        empty = np.array([], dtype=np.intp)
        parts = [rows.get(ids[j], empty) for j in draw]
        take = np.concatenate(parts) if parts else empty
        sub = df.iloc[take].reset_index(drop=True)
        sub[ID] = np.repeat(new_ids, [len(p) for p in parts])
        out[name] = sub
    return out


def intervention_log_ratio(spec: ModelSpec, data: Mapping[str, pd.DataFrame]) -> tuple[float, bool]:
    """The fitted log ratio of the intervention term and whether the fit converged."""
    result = fit_spec(spec, dict(data))
    row = result.table[result.table["term"] == spec.intervention_term]
    if row.empty:
        return float("nan"), False
    est = float(row["estimate"].iloc[0])
    return est, bool(row["converged"].iloc[0]) and bool(np.isfinite(est))


def model_data(spec: ModelSpec, tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The datasets `spec`'s model kind reads, from `tables`."""
    return {d: tables[d] for d in get_model(spec.kind).datasets if d in tables}


def bootstrap_chunk(
    spec: ModelSpec, data: Mapping[str, pd.DataFrame], replicates: Iterable[int], seed: int
) -> pd.DataFrame:
    """Replicates `replicates` of the participant bootstrap: one row each with ``replicate``,
    ``estimate`` (the refitted log ratio) and ``converged``."""
    ids = participant_ids(data)
    rows = []
    for r in replicates:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(r)]))
        draw = rng.integers(0, len(ids), size=len(ids))
        est, ok = intervention_log_ratio(spec, resample(data, ids, draw))
        rows.append({"model": spec.name, "replicate": int(r), "estimate": est, "converged": ok})
    return pd.DataFrame(rows, columns=["model", "replicate", "estimate", "converged"])


def jackknife(spec: ModelSpec, data: Mapping[str, pd.DataFrame]) -> np.ndarray:
    """Leave-one-participant-out log ratios (for the BCa acceleration), in participant order."""
    ids = participant_ids(data)
    out = np.empty(len(ids))
    for i in range(len(ids)):
        keep = np.delete(np.arange(len(ids)), i)
        out[i], ok = intervention_log_ratio(spec, resample(data, ids, keep))
        if not ok:
            out[i] = np.nan
    return out


def bca_interval(
    boot: np.ndarray, theta: float, jack: np.ndarray, conf_level: float = 0.95
) -> tuple[float, float]:
    """Efron's bias-corrected and accelerated interval (log scale): bias correction
    ``z0 = Phi^-1(share of replicates below theta)``, acceleration from the jackknife's skewness,
    the percentile levels moved accordingly (Efron and Tibshirani 1993, 14.3)."""
    boot = boot[np.isfinite(boot)]
    jack = jack[np.isfinite(jack)]
    share = (np.sum(boot < theta) + 0.5 * np.sum(boot == theta)) / len(boot)
    z0 = stats.norm.ppf(share)
    d = jack.mean() - jack
    denom = 6.0 * np.sum(d**2) ** 1.5
    a = float(np.sum(d**3) / denom) if denom > 0 else 0.0
    alpha = (1.0 - conf_level) / 2.0
    levels = []
    for z in (stats.norm.ppf(alpha), stats.norm.ppf(1.0 - alpha)):
        levels.append(stats.norm.cdf(z0 + (z0 + z) / (1.0 - a * (z0 + z))))
    low, high = np.quantile(boot, levels)
    return float(low), float(high)


def summarize_bootstrap(
    model: str,
    reps: pd.DataFrame,
    tidy_row: Mapping[str, Any],
    seed: int,
    jack: np.ndarray | None = None,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """The rows of ``results/sensitivity/bootstrap.csv`` for one model (ratios on the exp scale):

    - ``robust``: the model's own Wald interval (robust or model-based SE, as the model reports);
    - ``percentile``: the 2.5% and 97.5% quantiles of the replicates' ratios; ``std_error`` is
      the SD of the replicates' log ratios (the bootstrap estimate of the log ratio's SE);
    - ``bca``: the BCa interval (when the jackknife is given).

    ``estimate`` is the fitted ratio on the full data in every row; ``replicates`` counts the
    converged replicates, of which only these enter the intervals.
    """
    theta = float(tidy_row["estimate"])
    ok = reps["converged"].astype(bool) & np.isfinite(reps["estimate"])
    boot = reps.loc[ok, "estimate"].to_numpy(dtype=float)
    n_total = int(len(reps))
    rows = [
        {
            "method": "robust" if bool(tidy_row.get("robust")) else "model-based",
            "conf_low": float(tidy_row["conf_low"]),
            "conf_high": float(tidy_row["conf_high"]),
            "std_error": float(tidy_row["std_error"]),
            "replicates": 0,
            "converged": 0,
        }
    ]
    if len(boot) >= 2:
        alpha = (1.0 - conf_level) / 2.0
        low, high = np.quantile(boot, [alpha, 1.0 - alpha])
        sd = float(np.std(boot, ddof=1))
        rows.append(
            {
                "method": "percentile",
                "conf_low": float(low),
                "conf_high": float(high),
                "std_error": sd,
                "replicates": n_total,
                "converged": len(boot),
            }
        )
        if jack is not None and np.isfinite(jack).sum() >= 2:
            low, high = bca_interval(boot, theta, jack, conf_level)
            rows.append(
                {
                    "method": "bca",
                    "conf_low": low,
                    "conf_high": high,
                    "std_error": sd,
                    "replicates": n_total,
                    "converged": len(boot),
                }
            )
    out = pd.DataFrame(rows)
    out.insert(0, "model", model)
    out.insert(2, "estimate", np.exp(theta))
    out["conf_low"] = np.exp(out["conf_low"])
    out["conf_high"] = np.exp(out["conf_high"])
    out["seed"] = int(seed)
    return out[BOOTSTRAP_COLUMNS]


def ratio_claim_models(config: Mapping[str, Any]) -> list[str]:
    """Each rate or hazard claim's model, the primary claim's first, without repeats."""
    from recurstudy.claims import DEFAULT_MODEL, ordered_claims
    from recurstudy.power import POWER_METRICS

    names: list[str] = []
    for claim in ordered_claims(config):
        if claim["metric"] in POWER_METRICS:
            name = claim.get("model") or DEFAULT_MODEL[claim["metric"]]
            if name not in names:
                names.append(name)
    return names


def bootstrap_models(config: Mapping[str, Any]) -> list[str]:
    """The models whose effect is bootstrapped: :func:`ratio_claim_models` (none when
    ``bootstrap.replicates`` is 0)."""
    if not int((config.get("bootstrap") or {}).get("replicates", 0)):
        return []
    return ratio_claim_models(config)
