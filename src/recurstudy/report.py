"""The study report: every number, table and figure the report notebook shows, and its rendering.

The notebook (``workflow/notebooks/report.py.ipynb``) only reads result files and calls the
functions here, so that everything the report computes is tested. The pieces:

- **Disclosure control** (:func:`fmt_count`, :func:`suppress`): a cell counting fewer than
  ``min_cell`` participants shows ``<5``; *secondary suppression* hides further cells (shown as
  ``[s]``) wherever a suppressed cell could otherwise be recovered from a row or column total.
- **Tables**: participant flow (:func:`flow_table`), Table 1 by arm (:func:`table1`), episode
  rates per 100 participant-months (:func:`rates_table`), claims, models and diagnostics.
- **Figures** (matplotlib, Agg, no pyplot state): Kaplan-Meier with a number-at-risk table, mean
  cumulative function, forest plot, pain trajectories. PNG bytes are deterministic: fixed size
  and dpi, no ``Software`` metadata.
- **Text**: the summary paragraph and the methods paragraph, generated from the config and
  results.
- **Rendering**: :func:`execute_notebook` (nbclient, no timing metadata, parameters injected as a
  cell) and :func:`render_html` (nbconvert's lab template without require.js, MathJax or mermaid:
  the page makes no request).
- **Provenance**: :func:`sha256_file`, :func:`package_versions`, :func:`git_commit`,
  :func:`build_manifest` (``reports/manifest.json``); ``recurstudy.audit`` re-runs and compares.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

SUPPRESSED = "[s]"  # a secondary-suppressed cell (its value is >= min_cell but would reveal one)
DAYS_PER_MONTH = 365.25 / 12
ARM_COLOURS = ("#0072B2", "#D55E00", "#009E73")  # Okabe-Ito: readable in colour-blind vision
DPI = 100

# Packages whose versions the methods paragraph, the provenance section and the manifest list.
PACKAGES = (
    "recurstudy",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "statsmodels",
    "lifelines",
    "formulaic",
    "pandera",
    "matplotlib",
    "snakemake",
    "nbconvert",
    "nbclient",
    "nbformat",
    "ipykernel",
)

# Kinds whose intervention term is not a ratio (left out of the forest plot); any other kind is
# plotted, as "ratio" unless named below.
NOT_RATIO_KINDS = {"kaplan_meier", "mixed_pain"}
RATIO_KINDS = {
    "cox": "hazard ratio",
    "andersen_gill": "hazard ratio",
    "pwp": "hazard ratio",
    "frailty_cox": "hazard ratio",
    "poisson": "rate ratio",
    "negbin": "rate ratio",
    "zinb": "rate ratio",
}


# ------------------------------------------------------------------------ disclosure control


def fmt_count(n: Any, min_cell: int, *, suppress_zero: bool = True) -> str:
    """A participant count as shown in a report: ``<5`` when it counts fewer than `min_cell`.

    Zero is suppressed too unless `suppress_zero` is False (used where a zero is structural, such
    as nobody excluded, or nobody left at risk after the end of follow-up).
    """
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return ""
    n = int(n)
    if n < min_cell and (n > 0 or suppress_zero):
        return f"<{min_cell}"
    return str(n)


def suppress(
    values: Mapping[Any, float],
    groups: Iterable[Sequence[Any]],
    min_cell: int,
    *,
    suppress_zero: bool = True,
    priority: Mapping[Any, int] | None = None,
    exempt: Iterable[Any] = (),
) -> tuple[set, set]:
    """Primary and secondary suppression of a table of counts.

    `values` maps each cell (any hashable key) to its count. Each group lists cells tied by one
    additive relation (a row with its total, the categories of a column with the column total):
    a group with exactly one suppressed cell would let a reader recover it by subtraction, so
    the smallest other cell of the group (lowest `priority` first, default 0) is suppressed too,
    until no group has exactly one. Cells in `exempt` are never suppressed as primary cells
    (e.g. totals shown elsewhere). Returns ``(primary, secondary)`` sets of cell keys.
    """
    exempt = set(exempt)
    priority = dict(priority or {})
    primary = {
        c
        for c, v in values.items()
        if c not in exempt and v < min_cell and (v > 0 or suppress_zero)
    }
    secondary: set = set()
    groups = [list(g) for g in groups]
    changed = True
    while changed:
        changed = False
        for group in groups:
            hidden = [c for c in group if c in primary or c in secondary]
            if len(hidden) != 1:
                continue
            candidates = [c for c in group if c not in hidden]
            if not candidates:
                continue
            order = sorted(
                range(len(candidates)),
                key=lambda i: (priority.get(candidates[i], 0), values[candidates[i]], i),
            )
            secondary.add(candidates[order[0]])
            changed = True
    return primary, secondary


def _cell_text(key, text: str, primary: set, secondary: set, min_cell: int) -> str:
    if key in primary:
        return f"<{min_cell}"
    if key in secondary:
        return SUPPRESSED
    return text


# ------------------------------------------------------------------------------ formatting


def fmt_num(x: Any, digits: int = 2) -> str:
    """A number with `digits` decimals; blank for missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "" if x is None or math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{float(x):.{digits}f}"


def fmt_p(p: Any) -> str:
    """A p-value: three significant decimals, ``<0.001`` below that."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    p = float(p)
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_ci(low: Any, high: Any, digits: int = 2) -> str:
    """``low–high`` with `digits` decimals; blank if either bound is missing."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (low, high)):
        return ""
    return f"{fmt_num(low, digits)}–{fmt_num(high, digits)}"


def fmt_pct(x: Any, digits: int = 0) -> str:
    """A fraction as a percentage (0.68 -> ``68%``)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{100 * float(x):.{digits}f}%"


def arm_labels(config: Mapping[str, Any]) -> tuple[str, str]:
    """The configured (control, intervention) labels."""
    arms = config.get("arms") or {}
    return arms.get("control", "control"), arms.get("intervention", "intervention")


def intervention_term(config: Mapping[str, Any]) -> str:
    """The tidy term of the intervention effect, e.g. ``arm[T.intervention]``."""
    return f"arm[T.{arm_labels(config)[1]}]"


# ------------------------------------------------------------------------------ flow


def flow_table(flow: Mapping[str, Any], min_cell: int = 5) -> pd.DataFrame:
    """CONSORT participant flow by arm: received, excluded by validation, analysed.

    Zero counts are shown (nobody excluded identifies nobody); other counts below `min_cell` are
    suppressed, with secondary suppression along both relations (received = excluded +
    analysed in each column, arms adding up to the total in each row), hiding excluded, then
    received cells before analysed ones.
    """
    fp = flow["participants"]
    labels = flow.get("arms", {"control": "control", "intervention": "intervention"})
    roles = ["control", "intervention"]
    if fp["received_by_arm"].get("other", 0):
        roles.append("other")
    names = {"control": labels["control"], "intervention": labels["intervention"]}
    names["other"] = "other / invalid arm"
    stages = [
        ("received", "Received"),
        ("excluded", "Excluded by validation"),
        ("analysed", "Analysed"),
    ]
    values: dict[tuple[str, str], int] = {}
    for key, _ in stages:
        for r in roles:
            values[(key, r)] = int(fp[f"{key}_by_arm"].get(r, 0))
        values[(key, "total")] = int(fp[key])
    cols = [*roles, "total"]
    groups = [[(k, c) for k, _ in stages] for c in cols]
    groups += [[(k, c) for c in cols] for k, _ in stages]
    prio = {cell: {"excluded": 0, "received": 1, "analysed": 2}[cell[0]] for cell in values}
    primary, secondary = suppress(values, groups, min_cell, suppress_zero=False, priority=prio)
    rows = []
    for key, label in stages:
        row = {"stage": label}
        for c in cols:
            text = str(values[(key, c)])
            row[names.get(c, "Total")] = _cell_text((key, c), text, primary, secondary, min_cell)
        rows.append(row)
    reasons = fp.get("excluded_by_reason") or {}
    for reason, k in sorted(reasons.items()):
        row = {"stage": f"   reason: {reason}"}
        for c in cols:
            row[names.get(c, "Total")] = ""
        row["Total"] = fmt_count(k, min_cell, suppress_zero=False)
        rows.append(row)
    return pd.DataFrame(rows)


def record_flow_table(flow: Mapping[str, Any], min_cell: int = 5) -> pd.DataFrame:
    """Rows of the episode and pain-score tables received, excluded and analysed."""
    rows = []
    for table, label in (("episodes", "Episodes"), ("pain_scores", "Pain scores")):
        t = flow.get(table)
        if not t or not t.get("received"):
            continue
        rows.append(
            {
                "table": label,
                "received": str(t["received"]),
                "excluded": fmt_count(t["excluded"], min_cell, suppress_zero=False),
                "analysed": str(t["analysed"]),
            }
        )
    return pd.DataFrame(rows, columns=["table", "received", "excluded", "analysed"])


# ------------------------------------------------------------------------------ Table 1


def _arm_columns(participants: pd.DataFrame, config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    control, intervention = arm_labels(config)
    return [
        (control, participants["arm"] == control),
        (intervention, participants["arm"] == intervention),
        ("Overall", pd.Series(True, index=participants.index)),
    ]


def table1(
    participants: pd.DataFrame, config: Mapping[str, Any], min_cell: int | None = None
) -> pd.DataFrame:
    """Table 1: baseline characteristics by arm with disclosure control.

    Rows: site, each declared covariate (numeric: mean (SD), or median [Q1, Q3] for integer
    columns; categorical/boolean: n (%) per level, missing as its own level), follow-up in months
    and the reason follow-up ended. Columns: the two arms and overall, headed with their N.
    Category counts below `min_cell` (zero included: "no woman in arm B" is a disclosure) show
    ``<5``; secondary suppression runs per variable over rows (arm + arm = overall) and columns
    (levels add up to the arm's N). A summary of fewer than `min_cell` values is not shown.
    """
    min_cell = int(config.get("min_cell", 5) if min_cell is None else min_cell)
    df = participants.copy()
    arms = _arm_columns(df, config)
    n_arm = {name: int(mask.sum()) for name, mask in arms}
    small_arm = {name for name, n in n_arm.items() if n < min_cell}
    headers = {name: f"{name} (N={fmt_count(n, min_cell)})" for name, n in n_arm.items()}
    rows: list[dict[str, str]] = []

    def categorical(label: str, series: pd.Series) -> None:
        s = series.astype("object").where(series.notna(), "missing").astype(str)
        levels = sorted(set(s) - {"missing"}) + (["missing"] if (s == "missing").any() else [])
        values = {}
        for lev in levels:
            for name, mask in arms:
                values[(lev, name)] = int(((s == lev) & mask).sum())
        groups = [[(lev, name) for name, _ in arms] for lev in levels]
        groups += [[(lev, name) for lev in levels] for name, _ in arms if len(levels) > 1]
        primary, secondary = suppress(values, groups, min_cell)
        for name in small_arm:
            primary |= {(lev, name) for lev in levels}
        rows.append({"characteristic": label, "level": "", **{headers[n]: "" for n, _ in arms}})
        for lev in levels:
            row = {"characteristic": "", "level": lev}
            for name, _ in arms:
                n = values[(lev, name)]
                pct = 100.0 * n / n_arm[name] if n_arm[name] else float("nan")
                text = f"{n} ({pct:.1f}%)"
                row[headers[name]] = _cell_text((lev, name), text, primary, secondary, min_cell)
            rows.append(row)

    def numeric(label: str, series: pd.Series, integer: bool) -> None:
        x = pd.to_numeric(series, errors="coerce").astype(float)
        kind = "median [Q1, Q3]" if integer else "mean (SD)"
        row = {"characteristic": f"{label}, {kind}", "level": ""}
        for name, mask in arms:
            v = x[mask.to_numpy()].dropna()
            if len(v) < min_cell:
                row[headers[name]] = f"n<{min_cell}"
            elif integer:
                q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
                row[headers[name]] = f"{med:g} [{q1:g}, {q3:g}]"
            else:
                row[headers[name]] = f"{v.mean():.1f} ({v.std(ddof=1):.1f})"
        rows.append(row)
        miss = {name: int(x[mask.to_numpy()].isna().sum()) for name, mask in arms}
        if miss["Overall"]:
            values = {("missing", name): n for name, n in miss.items()}
            primary, secondary = suppress(values, [list(values)], min_cell)
            row = {"characteristic": "", "level": "missing, n"}
            for name, _ in arms:
                row[headers[name]] = _cell_text(
                    ("missing", name), str(miss[name]), primary, secondary, min_cell
                )
            rows.append(row)

    if "site" in df:
        categorical("Site", df["site"])
    for col, kind in (config.get("covariates") or {}).items():
        if col not in df:
            continue
        label = col.replace("_", " ").capitalize()
        if kind in ("categorical", "boolean"):
            categorical(label, df[col])
        else:
            integer = kind == "integer" or pd.api.types.is_integer_dtype(df[col])
            numeric(label, df[col], integer)
    if {"enrolled_on", "followup_end"} <= set(df):
        months = (
            pd.to_datetime(df["followup_end"]) - pd.to_datetime(df["enrolled_on"])
        ).dt.days / DAYS_PER_MONTH
        numeric("Follow-up, months", months, integer=False)
    if "end_reason" in df:
        categorical("End of follow-up", df["end_reason"])
    cols = ["characteristic", "level", *[headers[n] for n, _ in arms]]
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------------ rates


def poisson_ci(k: float, exposure: float, conf: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) confidence interval of a Poisson rate k / exposure."""
    a = 1.0 - conf
    low = 0.0 if k == 0 else stats.chi2.ppf(a / 2, 2 * k) / 2
    high = stats.chi2.ppf(1 - a / 2, 2 * k + 2) / 2
    return low / exposure, high / exposure


def rates_table(
    counts: pd.DataFrame, config: Mapping[str, Any], min_cell: int | None = None
) -> pd.DataFrame:
    """Episodes per 100 participant-months by arm and overall (exact Poisson 95% CI).

    Participant-months are the analysed exposure (``exposure_days`` / 30.44). Participant and
    episode counts below `min_cell` are suppressed, with secondary suppression across the arms
    and total; a suppressed episode count hides its rate too.
    """
    min_cell = int(config.get("min_cell", 5) if min_cell is None else min_cell)
    arms = _arm_columns(counts, config)
    raw = []
    for name, mask in arms:
        sub = counts[mask.to_numpy()]
        raw.append(
            (
                name,
                len(sub),
                int(sub["n_episodes"].sum()),
                float(sub["exposure_days"].sum()) / DAYS_PER_MONTH,
            )
        )
    values = {}
    for name, n, k, _ in raw:
        values[("n", name)] = n
        values[("k", name)] = k
    groups = [[("n", name) for name, *_ in raw], [("k", name) for name, *_ in raw]]
    primary, secondary = suppress(values, groups, min_cell)
    rows = []
    for name, n, k, pm in raw:
        hidden_k = ("k", name) in primary or ("k", name) in secondary
        hidden_n = ("n", name) in primary or ("n", name) in secondary
        if pm > 0:
            rate = 100 * k / pm
            low, high = poisson_ci(k, pm)
            rate_text, ci_text = f"{rate:.1f}", f"{100 * low:.1f}–{100 * high:.1f}"
        else:
            rate_text = ci_text = ""
        if hidden_k or hidden_n:
            rate_text = ci_text = SUPPRESSED
        rows.append(
            {
                "arm": name,
                "participants": _cell_text(("n", name), str(n), primary, secondary, min_cell),
                "episodes": _cell_text(("k", name), str(k), primary, secondary, min_cell),
                "participant-months": f"{pm:.0f}" if not hidden_n else SUPPRESSED,
                "episodes per 100 participant-months": rate_text,
                "95% CI": ci_text,
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ claims


def claims_table(claims: pd.DataFrame) -> pd.DataFrame:
    """Each claim with its estimate on the claim's scale, interval, verdict, reason and power."""
    rows = []
    for r in claims.itertuples(index=False):
        est = getattr(r, "estimate", float("nan"))
        rows.append(
            {
                "claim": r.claim_id,
                "statement": r.statement,
                "model": r.model,
                "claimed": fmt_pct(r.claimed),
                "estimated reduction (95% CI)": (
                    f"{fmt_pct(est)} ({fmt_pct(r.conf_low)} to {fmt_pct(r.conf_high)})"
                    if _finite(est)
                    else "not estimable"
                ),
                "p (no effect)": fmt_p(r.p_value_no_effect),
                "p (claimed value)": fmt_p(r.p_value_claimed),
                "verdict": r.verdict,
                "reason": r.reason,
                "power": (
                    fmt_pct(r.power, 1) if _finite(getattr(r, "power", None)) else "not simulated"
                ),
            }
        )
    return pd.DataFrame(rows)


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def summary_paragraph(
    flow: Mapping[str, Any], claims: pd.DataFrame, counts: pd.DataFrame, config: Mapping[str, Any]
) -> str:
    """One paragraph: cohort size, episodes and exposure, and each claim's verdict."""
    min_cell = int(config.get("min_cell", 5))
    control, intervention = arm_labels(config)
    fp = flow["participants"]
    by = fp["analysed_by_arm"]
    pm = float(counts["exposure_days"].sum()) / DAYS_PER_MONTH
    k = int(counts["n_episodes"].sum())
    parts = [
        f"Of {fmt_count(fp['received'], min_cell)} participants received, "
        f"{fmt_count(fp['analysed'], min_cell)} were analysed "
        f"({fmt_count(by.get('control', 0), min_cell)} {control}, "
        f"{fmt_count(by.get('intervention', 0), min_cell)} {intervention}); "
        f"{fmt_count(fp['excluded'], min_cell, suppress_zero=False)} were excluded by "
        f"validation. They had {fmt_count(k, min_cell)} pain episodes over {pm:.0f} "
        "participant-months of follow-up."
    ]
    for r in claims.itertuples(index=False):
        if _finite(r.estimate):
            est = (
                f"the data estimate a {fmt_pct(r.estimate)} reduction (95% CI "
                f"{fmt_pct(r.conf_low)} to {fmt_pct(r.conf_high)}, model {r.model})"
            )
        else:
            est = f"the claim could not be estimated ({r.reason})"
        parts.append(
            f"Claim {r.claim_id} (“{r.statement}”, claimed {fmt_pct(r.claimed)}): {est}; "
            f"verdict: **{r.verdict}**."
        )
    return " ".join(parts)


# ------------------------------------------------------------------------------ models


def specs_by_name(config: Mapping[str, Any]) -> dict[str, Any]:
    from recurstudy.models import model_specs

    return {s.name: s for s in model_specs(dict(config))}


def intervention_rows(estimates: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """One row per model: the intervention term, or the model's failure row (never dropped)."""
    term = intervention_term(config)
    rows = []
    for _name, g in estimates.groupby("model", sort=False):
        hit = g[g["term"] == term]
        if len(hit):
            rows.append(hit.iloc[0])
        else:
            failed = g[~g["converged"].astype(bool)]
            if len(failed):
                rows.append(failed.iloc[0])
    return pd.DataFrame(rows).reset_index(drop=True)


def forest_data(
    estimates: pd.DataFrame, config: Mapping[str, Any], forest: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The forest plot's rows: model, kind, effect measure, ratio and interval, status.

    Uses the sensitivity stage's forest table when given, else the intervention rows of the
    estimates. Only ratio models (hazard and rate ratios) are plotted; a model that failed keeps
    its row with its message.
    """
    specs = specs_by_name(config)
    base = forest if forest is not None and len(forest) else intervention_rows(estimates, config)
    rows = []
    for r in base.to_dict("records"):
        spec = specs.get(r["model"])
        kind = spec.kind if spec else ""
        if not spec or kind in NOT_RATIO_KINDS:
            continue
        ok = bool(r.get("converged", True)) and _finite(r.get("exp_estimate"))
        message = r.get("message")
        message = "" if message is None or (isinstance(message, float)) else str(message)
        rows.append(
            {
                "model": r["model"],
                "kind": kind,
                "measure": RATIO_KINDS.get(kind, "ratio"),
                "adjusted": r["model"].endswith("_adjusted"),
                "ratio": float(r["exp_estimate"]) if ok else float("nan"),
                "conf_low": float(r["exp_conf_low"]) if ok else float("nan"),
                "conf_high": float(r["exp_conf_high"]) if ok else float("nan"),
                "converged": ok,
                "message": message,
            }
        )
    out = pd.DataFrame(rows)
    if len(out):
        order = {"hazard ratio": 0, "rate ratio": 1}
        out["_o"] = out["measure"].map(order).fillna(2)
        out = out.sort_values(["_o"], kind="stable").drop(columns="_o").reset_index(drop=True)
    return out


def model_table(estimates: pd.DataFrame, min_cell: int = 5) -> pd.DataFrame:
    """Every row of every tidy table, formatted; a failed model keeps its row (its message is in
    :func:`convergence_table`, one line per model)."""
    rows = []
    for r in estimates.to_dict("records"):
        conv = bool(r["converged"])
        rows.append(
            {
                "model": r["model"],
                "term": r["term"],
                "estimate (log)": fmt_num(r["estimate"], 3),
                "SE": fmt_num(r["std_error"], 3),
                "robust SE": "yes" if bool(r["robust"]) else "no",
                "exp(estimate) (95% CI)": (_ratio_ci(r, 3) if _finite(r["exp_estimate"]) else ""),
                "p": fmt_p(r["p_value"]),
                "participants": fmt_count(r["n_participants"], min_cell),
                "events": fmt_count(r["n_events"], min_cell),
                "converged": "yes" if conv else "NO (see Convergence)",
            }
        )
    return pd.DataFrame(rows)


def _ratio_ci(r: Mapping[str, Any], digits: int = 2) -> str:
    """``ratio (low–high)`` from a tidy row's exp_* columns."""
    ci = fmt_ci(r["exp_conf_low"], r["exp_conf_high"], digits)
    return f"{fmt_num(r['exp_estimate'], digits)} ({ci})"


def convergence_table(estimates: pd.DataFrame) -> pd.DataFrame:
    """One row per model: converged, log-likelihood and message."""
    rows = []
    for name, g in estimates.groupby("model", sort=False):
        msgs = sorted({str(m) for m in g["message"] if isinstance(m, str) and m})
        ll = g["log_likelihood"].dropna()
        rows.append(
            {
                "model": name,
                "converged": "yes" if g["converged"].astype(bool).all() else "NO",
                "log-likelihood": fmt_num(ll.iloc[0], 2) if len(ll) else "",
                "message": "; ".join(msgs),
            }
        )
    return pd.DataFrame(rows)


def collect_extras(models_dir: str | Path, names: Iterable[str], extra: str) -> pd.DataFrame:
    """The `extra` table (e.g. ``ph_test``) of each model that wrote one, stacked with a model
    column first."""
    frames = []
    for name in names:
        path = Path(models_dir) / name / f"{extra}.csv"
        if path.exists():
            df = pd.read_csv(path)
            if "model" not in df:
                df.insert(0, "model", name)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def format_frame(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Round the float columns for display (p-value columns as :func:`fmt_p`)."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            if "p_value" in col or col == "p":
                out[col] = out[col].map(fmt_p)
            else:
                out[col] = out[col].map(lambda v: fmt_num(v, digits))
    return out.fillna("")


def crude_vs_adjusted(estimates: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """Intervention ratio of each model and its ``_adjusted`` variant side by side."""
    from recurstudy.sensitivity import adjusted_pairs

    out = [
        {"model": name, "crude (95% CI)": _ratio_ci(a), "adjusted (95% CI)": _ratio_ci(b)}
        for name, a, b in adjusted_pairs(intervention_rows(estimates, config))
    ]
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------ pain


def pain_means(
    pain_scores: pd.DataFrame, participants: pd.DataFrame, config: Mapping[str, Any]
) -> pd.DataFrame:
    """Observed mean NRS by arm and visit week (``round(days since enrolment / 7)``), with n,
    SD and a 95% t interval; cells with fewer than `min_cell` participants are flagged."""
    min_cell = int(config.get("min_cell", 5))
    df = pain_scores.merge(
        participants[["participant_id", "arm", "enrolled_on"]], on="participant_id", how="inner"
    )
    days = (pd.to_datetime(df["assessed_on"]) - pd.to_datetime(df["enrolled_on"])).dt.days
    df["week"] = np.round(days / 7.0).astype(int)
    rows = []
    for (arm, week), g in df.groupby(["arm", "week"], sort=True):
        per = g.groupby("participant_id")["nrs"].mean()
        n = len(per)
        mean = float(per.mean())
        sd = float(per.std(ddof=1)) if n > 1 else float("nan")
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
        rows.append(
            {
                "arm": arm,
                "week": int(week),
                "n": n,
                "mean": mean,
                "sd": sd,
                "conf_low": mean - half,
                "conf_high": mean + half,
                "suppressed": n < min_cell,
            }
        )
    return pd.DataFrame(
        rows, columns=["arm", "week", "n", "mean", "sd", "conf_low", "conf_high", "suppressed"]
    )


def pain_table(means: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """The observed means as a wide table: weeks as rows, ``mean (SD), n`` per arm."""
    min_cell = int(config.get("min_cell", 5))
    if means.empty:
        return pd.DataFrame()
    rows = []
    for week, g in means.groupby("week", sort=True):
        row = {"week": int(week)}
        for r in g.itertuples(index=False):
            if r.suppressed:
                row[r.arm] = f"n<{min_cell}"
            else:
                row[r.arm] = f"{r.mean:.2f} ({fmt_num(r.sd)}), n={r.n}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


# ------------------------------------------------------------------------------ figures


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI)


def png_bytes(fig) -> bytes:
    """The figure as PNG: fixed dpi, no metadata (same bytes on every run)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "recurstudy", "path.simplify": True}):
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def img_html(png: bytes, alt: str, caption: str | None = None) -> str:
    """A ``<figure>`` with the PNG embedded as a data: URI (no file, no request)."""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure class="rs-figure"><img alt="{html.escape(alt, quote=True)}" '
        f'src="data:image/png;base64,{data}"/>{cap}</figure>'
    )


def _at_risk(surv: pd.DataFrame, t: float) -> int:
    later = surv[surv["time"] >= t]
    if len(later):
        return int(later["n_risk"].iloc[0])
    last = surv.iloc[-1]
    return int(last["n_risk"] - last["n_event"] - last["n_censor"])


def km_figure(
    survival: pd.DataFrame,
    config: Mapping[str, Any],
    *,
    logrank_p: float | None = None,
    step: int = 30,
):
    """Kaplan-Meier curves by arm with 95% bands and a number-at-risk table under the axes
    (counts below `min_cell` shown as ``<5``)."""
    min_cell = int(config.get("min_cell", 5))
    fig = _figure(8, 5.6)
    gs = fig.add_gridspec(2, 1, height_ratios=[4, 1], hspace=0.35)
    ax = fig.add_subplot(gs[0])
    tab = fig.add_subplot(gs[1], sharex=ax)
    arms = list(arm_labels(config))
    tmax = float(survival["time"].max()) if len(survival) else 1.0
    ticks = np.arange(0, tmax + 1e-9, step) if tmax >= step else np.array([0.0, tmax])
    for i, arm in enumerate(arms):
        s = survival[survival["arm"] == arm].sort_values("time")
        if s.empty:
            continue
        t = np.concatenate([[0.0], s["time"].to_numpy(float)])
        y = np.concatenate([[1.0], s["surv"].to_numpy(float)])
        lo = np.concatenate([[1.0], s["conf_low"].to_numpy(float)])
        hi = np.concatenate([[1.0], s["conf_high"].to_numpy(float)])
        col = ARM_COLOURS[i % len(ARM_COLOURS)]
        ax.step(t, y, where="post", color=col, label=arm, linewidth=1.8)
        ax.fill_between(t, lo, hi, step="post", color=col, alpha=0.15, linewidth=0)
        for x in ticks:
            tab.text(
                x,
                len(arms) - 1 - i,
                fmt_count(_at_risk(s, x), min_cell, suppress_zero=False),
                ha="center",
                va="center",
                fontsize=9,
                color=col,
            )
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("Free of episodes")
    ax.set_title("Time to first pain episode (Kaplan-Meier, 95% CI)")
    if logrank_p is not None and _finite(logrank_p):
        ax.text(
            0.98,
            0.95,
            f"log-rank p {fmt_p(logrank_p)}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
        )
    ax.legend(loc="lower left", frameon=False)
    ax.grid(alpha=0.3)
    tab.set_yticks(range(len(arms)))
    tab.set_yticklabels(list(reversed(arms)))
    tab.set_ylim(-0.6, len(arms) - 0.4)
    tab.set_xticks(ticks)
    tab.set_xlabel("Days since enrolment")
    tab.set_title("Number at risk", fontsize=9, loc="left")
    for sp in ("top", "right", "left"):
        tab.spines[sp].set_visible(False)
    tab.tick_params(left=False)
    plt_setp(ax.get_xticklabels(), visible=False)
    return fig


def plt_setp(objs, **kw) -> None:
    for o in objs:
        o.set(**kw)


def mcf_figure(mcf: pd.DataFrame, config: Mapping[str, Any]):
    """Mean cumulative number of episodes per participant by arm (Nelson-Aalen type), with the
    95% band (``conf_low``/``conf_high``: plain interval from the participant-clustered robust
    standard error) as a light step fill per arm when the table has it."""
    fig = _figure(8, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    band = {"conf_low", "conf_high"} <= set(mcf.columns)
    for i, arm in enumerate(arm_labels(config)):
        s = mcf[mcf["arm"] == arm].sort_values("time")
        if s.empty:
            continue
        col = ARM_COLOURS[i % len(ARM_COLOURS)]
        t = np.concatenate([[0.0], s["time"].to_numpy(float)])
        y = np.concatenate([[0.0], s["mcf"].to_numpy(float)])
        if band:
            lo = np.concatenate([[0.0], s["conf_low"].to_numpy(float)])
            hi = np.concatenate([[0.0], s["conf_high"].to_numpy(float)])
            ax.fill_between(t, lo, hi, step="post", color=col, alpha=0.2, linewidth=0)
        ax.step(t, y, where="post", color=col, label=arm, linewidth=1.8)
    ax.set_xlabel("Days since enrolment")
    ax.set_ylabel("Mean cumulative episodes")
    title = "Mean cumulative function of recurrent episodes"
    ax.set_title(title + (" (95% CI, robust)" if band else ""))
    ax.legend(loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    return fig


def forest_figure(rows: pd.DataFrame):
    """Intervention effect (ratio, log axis, 95% CI) across models; failed models are listed
    with their message instead of a point."""
    n = max(len(rows), 1)
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    height = 0.42 * n + 1.4
    fig = _figure(10, height)
    ax = fig.add_axes((0.34, 0.9 / height, 0.38, 1 - 1.3 / height))
    ys = np.arange(n)[::-1]
    finite = rows[rows["converged"]] if len(rows) else rows
    lo = float(finite["conf_low"].min()) if len(finite) else 0.1
    hi = float(finite["conf_high"].max()) if len(finite) else 10.0
    lo, hi = min(lo, 1.0) / 1.25, max(hi, 1.0) * 1.25
    for y, r in zip(ys, rows.to_dict("records"), strict=False):
        colour = "#333333" if not r["adjusted"] else "#0072B2"
        label = f"{r['model']}  [{r['measure']}]"
        ax.text(
            -0.02, y, label, transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=9
        )
        if r["converged"]:
            ax.plot([r["conf_low"], r["conf_high"]], [y, y], color=colour, linewidth=1.5)
            ax.plot([r["ratio"]], [y], "s", color=colour, markersize=6)
            text = f"{r['ratio']:.2f} ({r['conf_low']:.2f}–{r['conf_high']:.2f})"
        else:
            text = "not estimable: " + (r["message"][:60] or "did not converge")
        ax.text(
            1.02,
            y,
            text,
            transform=ax.get_yaxis_transform(),
            ha="left",
            va="center",
            fontsize=9,
            color="#333333" if r["converged"] else "#B00020",
        )
    ax.axvline(1.0, color="#777777", linewidth=1, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    grid = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20, 50, 100]
    ticks = [t for t in grid if lo <= t <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_yticks([])
    ax.set_xlabel("Intervention vs control (ratio, log scale; < 1 favours intervention)")
    ax.set_title("Intervention effect across models (blue: adjusted)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def pain_figure(means: pd.DataFrame, config: Mapping[str, Any]):
    """Observed mean NRS pain by arm and week with 95% CIs; cells under `min_cell` omitted."""
    fig = _figure(8, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for i, arm in enumerate(arm_labels(config)):
        s = means[(means["arm"] == arm) & ~means["suppressed"]].sort_values("week")
        if s.empty:
            continue
        ax.errorbar(
            s["week"],
            s["mean"],
            yerr=[s["mean"] - s["conf_low"], s["conf_high"] - s["mean"]],
            color=ARM_COLOURS[i],
            marker="o",
            capsize=3,
            label=arm,
            linewidth=1.6,
        )
    ax.set_xlabel("Week since enrolment")
    ax.set_ylabel("Mean NRS pain (0-10)")
    ax.set_ylim(bottom=0)
    ax.set_title("Pain-score trajectories (observed means, 95% CI)")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def placeholder_figure(text: str):
    """A small figure that says why there is nothing to plot (keeps the outputs fixed)."""
    fig = _figure(6, 1.2)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=11)
    return fig


# ------------------------------------------------------------------------------ HTML bits


def table_html(df: pd.DataFrame, caption: str | None = None, note: str | None = None) -> str:
    """A plain HTML table (escaped, no ids, no styles: same bytes every time)."""
    if df is None or df.empty:
        body = "<p><em>Nothing to show.</em></p>"
    else:
        body = df.to_html(index=False, escape=True, border=0, classes="rs-table", na_rep="")
    cap = f"<p class='rs-caption'><strong>{html.escape(caption)}</strong></p>" if caption else ""
    foot = f"<p class='rs-note'>{html.escape(note)}</p>" if note else ""
    return cap + body + foot


def suppression_note(min_cell: int) -> str:
    return (
        f"<{min_cell}: fewer than {min_cell} participants; {SUPPRESSED}: hidden so that a "
        f"suppressed cell cannot be recovered from the totals."
    )


# ------------------------------------------------------------------------------ methods


KIND_TEXT = {
    "kaplan_meier": "Kaplan-Meier estimates of the time to the first episode by arm, compared "
    "with the log-rank test, and the mean cumulative function of all episodes",
    "cox": "a Cox proportional-hazards model of the time to the first episode (Efron ties)",
    "andersen_gill": "an Andersen-Gill model of all episodes in the counting-process "
    "(start, stop] layout",
    "pwp": "a Prentice-Williams-Peterson model stratified by episode number ({timescale} time)",
    "frailty_cox": "a Cox model of all episodes with a shared gamma frailty per participant",
    "poisson": "a Poisson regression of the number of episodes with log exposure as offset",
    "negbin": "a negative binomial (NB2) regression of the number of episodes with log exposure "
    "as offset",
    "zinb": "a zero-inflated negative binomial regression of the number of episodes with log "
    "exposure as offset",
    "mixed_pain": "a linear mixed model of NRS pain by arm and visit week (REML) with a "
    "random intercept and slope per participant",
}


def methods_paragraph(
    config: Mapping[str, Any],
    estimates: pd.DataFrame | None = None,
    versions: Mapping[str, str] | None = None,
) -> str:
    """The methods paragraph, generated from the config (models, formulas, options, claims,
    power, disclosure control) and the software versions."""
    specs = list(specs_by_name(config).values())
    control, intervention = arm_labels(config)
    robust = {}
    if estimates is not None and len(estimates):
        for name, g in estimates.groupby("model"):
            robust[name] = bool(g["robust"].astype(bool).any())
    design = config.get("design", "randomized")
    on_invalid = (
        "stop the analysis"
        if config.get("on_invalid", "fail") == "fail"
        else "exclude the participant with all their rows"
    )
    lines = [
        f"This {'randomised' if design == 'randomized' else 'observational'} comparison of "
        f"{intervention} with {control} used the cohort tables named in the configuration, "
        f"validated against the data contract (invalid cohorts: "
        f"{on_invalid})."
    ]
    if config.get("exclude_episode_time"):
        lines.append("Days spent inside an episode were removed from the time at risk.")
    else:
        lines.append("Time inside an episode counted as time at risk.")
    parts = []
    for s in specs:
        text = KIND_TEXT.get(s.kind, f"a model of kind {s.kind}")
        text = text.format(timescale=s.options.get("timescale", "total"))
        if s.kind != "kaplan_meier":
            text += f" with formula ~ {s.formula}"
            if s.name in robust:
                text += (
                    ", robust (sandwich) standard errors"
                    if robust[s.name]
                    else ", model-based standard errors"
                )
        parts.append(f"{s.name}: {text}")
    lines.append("Models — " + "; ".join(parts) + ".")
    lines.append(
        "Effects are reported as hazard or rate ratios of intervention vs control with "
        "95% Wald confidence intervals."
    )
    claims = config.get("claims") or []
    if claims:
        power = config.get("power") or {}
        lines.append(
            f"{len(claims)} claim(s) were compared with the estimates (verdict rules in "
            "recurstudy.claims); power to detect each claimed rate or hazard reduction was "
            f"estimated from {power.get('replicates', '?')} simulated replicates of this design "
            f"(seed {power.get('seed', '?')}, two-sided alpha {power.get('alpha', 0.05)})."
        )
    lines.append(
        f"Counts of fewer than {config.get('min_cell', 5)} participants are suppressed, with "
        "secondary suppression where totals would reveal them."
    )
    if versions:
        soft = ", ".join(f"{k} {v}" for k, v in versions.items())
        lines.append(f"Software: {soft}.")
    return " ".join(lines)


# ------------------------------------------------------------------------------ provenance


def sha256_file(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Python's and the listed packages' versions (``not installed`` when absent)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(path: str | Path) -> str:
    """The commit checked out at `path` (``git rev-parse HEAD``), or ``unknown``."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", out) else "unknown"


def input_hashes(config: Mapping[str, Any], run_dir: str | Path = ".") -> pd.DataFrame:
    """Name, path (as in the config), size and SHA-256 of each cohort table."""
    rows = []
    for name, path in sorted((config.get("data") or {}).items()):
        if not path:
            continue
        p = Path(run_dir) / path
        rows.append(
            {"table": name, "path": str(path), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        )
    return pd.DataFrame(rows, columns=["table", "path", "bytes", "sha256"])


# Outputs the manifest leaves out: itself, the run-info file (wall time, host), Snakemake's
# bookkeeping and the benchmark timings.
MANIFEST = "reports/manifest.json"
RUN_INFO = "reports/run_info.json"
OUTPUT_ROOTS = ("results", "reports")
EXCLUDED_OUTPUTS = (MANIFEST, RUN_INFO)
EXCLUDED_PREFIXES = ("results/benchmarks/", ".snakemake/")
EXCLUDED_NAMES = (".snakemake_timestamp", ".gitkeep")


def output_files(run_dir: str | Path) -> list[str]:
    """Every output under results/ and reports/ of `run_dir` that the manifest covers, as
    sorted POSIX paths relative to `run_dir`."""
    run_dir = Path(run_dir)
    out = []
    for root in OUTPUT_ROOTS:
        base = run_dir / root
        if not base.is_dir():
            continue
        for p in base.rglob("*"):
            if not p.is_file():
                continue
            rel = p.relative_to(run_dir).as_posix()
            if rel in EXCLUDED_OUTPUTS or p.name in EXCLUDED_NAMES:
                continue
            if any(rel.startswith(x) for x in EXCLUDED_PREFIXES):
                continue
            out.append(rel)
    return sorted(out)


def file_entry(path: str, base: str | Path) -> dict[str, Any]:
    p = Path(base) / path
    return {"path": path, "bytes": p.stat().st_size, "sha256": sha256_file(p)}


def _relpath(path: str | Path, start: str | Path) -> str:
    import os

    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def build_manifest(
    run_dir: str | Path,
    config: Mapping[str, Any],
    config_files: Sequence[str],
    workflow_dir: str | Path,
) -> dict[str, Any]:
    """The manifest: inputs (cohort tables, config file(s), the lock file), outputs, versions and
    the source commit; all paths relative to the run directory (the lock file's to the workflow
    source), sorted; nothing that varies between runs."""
    run_dir = Path(run_dir)
    inputs = []
    for name, path in sorted((config.get("data") or {}).items()):
        if path:
            entry = file_entry(_relpath(run_dir / path, run_dir), run_dir)
            inputs.append({"role": f"data:{name}", **entry})
    for cf in config_files:
        entry = file_entry(_relpath(run_dir / cf, run_dir), run_dir)
        inputs.append({"role": "config", **entry})
    lock = Path(workflow_dir) / "requirements.lock"
    if lock.exists():
        inputs.append(
            {"role": "lock", "root": "workflow", **file_entry("requirements.lock", workflow_dir)}
        )
    inputs.sort(key=lambda e: (e.get("root", "run"), e["path"]))
    outputs = [file_entry(p, run_dir) for p in output_files(run_dir)]
    return {
        "manifest_version": 1,
        "source_commit": git_commit(workflow_dir),
        "versions": package_versions(),
        "inputs": inputs,
        "outputs": outputs,
    }


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text (sorted keys, two-space indent, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------------ rendering


OFFLINE_TEMPLATE = r"""
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style type="text/css">
body.jp-Notebook { max-width: 70rem; margin: 0 auto; padding: 1rem 2rem; }
.jp-Cell { padding: 0; }
.jp-OutputArea-output table.rs-table { font-size: 0.85rem; margin: 0.4rem 0 0.2rem 0; }
.jp-OutputArea-output table.rs-table td, .jp-OutputArea-output table.rs-table th {
  text-align: left; padding: 0.15rem 0.5rem; }
.rs-figure img { max-width: 100%; height: auto; }
.rs-figure figcaption, .rs-note { font-size: 0.85rem; color: #444; }
.rs-caption { margin-bottom: 0.1rem; }
.rs-verdict { font-weight: bold; }
</style>
{%- endblock extra_css -%}
"""

EXTERNAL = re.compile(
    r"""(<script[^>]+src=|<link[^>]+href=["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|"""
    r"""@import|<iframe|src=["'](?:https?:)?//)""",
    re.IGNORECASE,
)


def html_exporter():
    """nbconvert's HTML exporter with the lab template minus every script from the web, and
    with code cells and prompts hidden."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        extra_loaders=[DictLoader({"recurstudy_offline.html.j2": OFFLINE_TEMPLATE})],
        template_name="lab",
    )
    exporter.template_file = "recurstudy_offline.html.j2"
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.embed_images = True
    exporter.anchor_link_text = ""
    return exporter


def render_html(nb, title: str = "recurstudy report") -> str:
    """The executed notebook as one self-contained HTML page that makes no request.

    Raises ValueError if the page would still load anything from outside (a script or style
    sheet with a URL, an @import, an iframe).
    """
    exporter = html_exporter()
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    # The lab theme's CSS comments cite web pages; they load nothing, but a page that must
    # never reach outside should not even mention an address: drop comments inside <style>.
    body = re.sub(
        r"(<style[^>]*>)(.*?)(</style>)",
        lambda m: m.group(1) + re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S) + m.group(3),
        body,
        flags=re.S,
    )
    bad = EXTERNAL.search(body)
    if bad:
        start = max(bad.start() - 80, 0)
        raise ValueError(
            f"the report would load an external resource: {body[start : bad.end() + 80]!r}"
        )
    return body


def parameters_cell(values: Mapping[str, Any]):
    """A code cell assigning each parameter (the papermill convention: tagged
    ``injected-parameters``), with a fixed cell id."""
    import pprint

    import nbformat

    src = "# Parameters (injected by workflow/scripts/render_report.py)\n" + "\n".join(
        f"{k} = {pprint.pformat(v, width=96, sort_dicts=True)}" for k, v in values.items()
    )
    cell = nbformat.v4.new_code_cell(src)
    cell.id = "injected-parameters"
    cell.metadata["tags"] = ["injected-parameters"]
    return cell


def execute_notebook(
    template: str | Path, parameters: Mapping[str, Any], run_dir: str | Path, timeout: int = 1200
):
    """Execute the report notebook in `run_dir` with nbclient: the parameters cell is inserted
    after the cell tagged ``parameters``; no timing metadata is recorded; outputs on stderr
    (warnings) are taken out of the notebook and returned separately.

    Returns ``(notebook, stderr_text)``.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(template), as_version=4)
    idx = next(
        (i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), -1
    )
    nb.cells.insert(idx + 1, parameters_cell(parameters))
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(run_dir)}},
        record_timing=False,
        allow_errors=False,
    )
    client.execute()
    return clean_notebook(nb)


def clean_notebook(nb):
    """Strip what varies between runs: execution metadata, stderr streams (returned as text)."""
    stderr = []
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                stderr.append(out.get("text", ""))
                continue
            out.get("metadata", {}).pop("execution", None)
            kept.append(out)
        cell.outputs = kept
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    return nb, "".join(stderr)
