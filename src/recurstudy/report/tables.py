"""The report's tables: participant flow, Table 1, event rates, claims, models and each model's
extra tables, pain-score means, provenance.

Every count goes through :mod:`recurstudy.report.disclosure`. Each model's part of the report
comes from the model's own description (``get_model(spec.kind).describe(spec)``: title, effect
measure, whether exp(estimate) is the effect, extra tables with captions and sections), so a new
model module reaches the report without any edit here. Tables are plain DataFrames of text;
:func:`recurstudy.report.render.table_html` escapes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.config import covariate_label, level_order, study_text
from recurstudy.contract import ARM, ID, arm_labels, intervention_term
from recurstudy.lazy import lazy_import
from recurstudy.models.base import ExtraTable, ModelDescription, ModelSpec
from recurstudy.report.disclosure import (
    SUPPRESSED,
    CohortCells,
    cell_text,
    coarse_share,
    fmt_count,
    kanon_range,
    suppress,
    suppress_counts,
)
from recurstudy.report.formatting import finite, fmt_ci, fmt_num, fmt_p, fmt_pct

stats = lazy_import("scipy.stats")

DAYS_PER_MONTH = 365.25 / 12
SECTIONS = ("diagnostics", "appendix", "hidden")  # where an ExtraTable can go


# ------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class ModelEntry:
    """One configured model as the report shows it: its spec and its own description."""

    spec: ModelSpec
    description: ModelDescription

    @property
    def name(self) -> str:
        """The configured name (``negbin_rate``, ``negbin_rate_adjusted``)."""
        return self.spec.name

    @property
    def adjusted(self) -> bool:
        """Whether this is the covariate-adjusted variant ``<name>_adjusted``."""
        return self.spec.name.endswith("_adjusted")


def model_entries(config: Mapping[str, Any]) -> list[ModelEntry]:
    """Every configured model (adjusted variants included, in config order) with its
    description."""
    from recurstudy.models import get_model, model_specs

    return [ModelEntry(s, get_model(s.kind).describe(s)) for s in model_specs(dict(config))]


def models_with_file(
    models_dir: str | Path, entries: Iterable[ModelEntry], file: str
) -> list[ModelEntry]:
    """The models that wrote ``<models_dir>/<name>/<file>.csv`` (e.g. ``survival``, ``mcf``):
    the report draws a figure wherever the file is, whatever the model."""
    return [e for e in entries if (Path(models_dir) / e.name / f"{file}.csv").is_file()]


def extra_caption(entries: Iterable[ModelEntry], name: str, file: str) -> str | None:
    """The caption model `name` gives its extra table `file`, if it declares one."""
    for e in entries:
        if e.name == name:
            for x in e.description.extras:
                if x.file == file:
                    return x.caption
    return None


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None


def section_extras(
    models_dir: str | Path,
    entries: Iterable[ModelEntry],
    section: str,
    min_cell: int,
    *,
    hide_all: bool = False,
    with_source: bool = False,
) -> list[tuple]:
    """``(caption, table)`` for each extra table the models put in `section` (``diagnostics``
    or ``appendix``) and wrote; a model and its adjusted variant (same title) share one table,
    with a ``model`` column. Count columns are disclosure-controlled
    (:func:`~recurstudy.report.disclosure.suppress_counts`; `hide_all` in a small cohort), floats
    rounded. In config order. With `with_source`, ``(caption, table, paths)``: the result files
    each table was drawn from."""
    if section not in SECTIONS:
        raise ValueError(f"unknown report section '{section}' (one of {', '.join(SECTIONS)})")
    frames: dict[tuple[str, str], list[pd.DataFrame]] = {}
    captions: dict[tuple[str, str], str] = {}
    paths: dict[tuple[str, str], list[str]] = {}
    for e in entries:
        extra: ExtraTable
        for extra in e.description.extras:
            if extra.section != section:
                continue
            path = Path(models_dir) / e.name / f"{extra.file}.csv"
            df = _read_csv(path)
            if df is None:
                continue
            if "model" not in df:
                df.insert(0, "model", e.name)
            key = (e.description.title, extra.file)
            frames.setdefault(key, []).append(df)
            paths.setdefault(key, []).append(path.as_posix())
            captions.setdefault(key, f"{e.description.title}: {extra.caption}")
    out = []
    for k, v in frames.items():
        parts = [suppress_counts(f, min_cell, hide_all=hide_all) for f in v]
        table = format_frame(not_reached(pd.concat(parts, ignore_index=True)))
        out.append((captions[k], table, paths[k]) if with_source else (captions[k], table))
    return out


def not_reached(df: pd.DataFrame) -> pd.DataFrame:
    """A table of medians (a ``median...`` column) with a missing median or interval end shown
    as ``not reached`` (the survival curve or its confidence band never falls to 0.5), and
    whole-number medians as integers."""
    cols = [c for c in df.columns if str(c).startswith("median")]
    if not cols:
        return df
    out = df.copy()
    for c in [*cols, *[c for c in ("conf_low", "conf_high") if c in df]]:
        if pd.api.types.is_numeric_dtype(out[c]):
            out[c] = out[c].map(
                lambda v: (
                    "not reached" if pd.isna(v) else (f"{v:.0f}" if v == round(v) else f"{v:.1f}")
                )
            )
    return out


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


FOREST_COLUMNS = [
    "model",
    "title",
    "measure",
    "adjusted",
    "ratio",
    "conf_low",
    "conf_high",
    "converged",
    "message",
]


def forest_data(
    estimates: pd.DataFrame,
    config: Mapping[str, Any],
    forest: pd.DataFrame | None = None,
    entries: Iterable[ModelEntry] | None = None,
) -> pd.DataFrame:
    """The forest plot's rows: model, title, effect measure, adjusted, ratio and interval,
    converged, message.

    Uses the sensitivity stage's forest table when given, else the intervention rows of the
    estimates. A model is plotted when its description says exp(estimate) is the effect
    (``ratio``); one that failed keeps its row with its message. Rows are grouped by effect
    measure in the order the measures first appear, models in config order within each.
    """
    described = {e.name: e for e in (model_entries(config) if entries is None else entries)}
    base = forest if forest is not None and len(forest) else intervention_rows(estimates, config)
    rows = []
    for r in base.to_dict("records"):
        entry = described.get(r["model"])
        if entry is None or not entry.description.ratio:
            continue
        ok = bool(r.get("converged", True)) and finite(r.get("exp_estimate"))
        message = r.get("message")
        rows.append(
            {
                "model": entry.name,
                "title": entry.description.title,
                "measure": entry.description.effect_measure or "ratio",
                "adjusted": entry.adjusted,
                "ratio": float(r["exp_estimate"]) if ok else float("nan"),
                "conf_low": float(r["exp_conf_low"]) if ok else float("nan"),
                "conf_high": float(r["exp_conf_high"]) if ok else float("nan"),
                "converged": ok,
                "message": message if isinstance(message, str) else "",
            }
        )
    out = pd.DataFrame(rows, columns=FOREST_COLUMNS)
    if len(out):
        order = {m: i for i, m in enumerate(dict.fromkeys(out["measure"]))}
        out = (
            out.assign(_o=out["measure"].map(order))
            .sort_values("_o", kind="stable")
            .drop(columns="_o")
            .reset_index(drop=True)
        )
    return out


def effect_measures(entries: Iterable[ModelEntry]) -> list[str]:
    """The distinct effect measures of the ratio models, in config order (for captions)."""
    return list(
        dict.fromkeys(
            e.description.effect_measure
            for e in entries
            if e.description.ratio and e.description.effect_measure
        )
    )


# A term whose standard error exceeds this on the model's scale (log ratio, logit) is not
# identified: its 95% interval spans a factor of more than e^196 (a boundary estimate such as a
# zero-inflation probability of 1e-13, or a monotone likelihood).
MAX_IDENTIFIED_SE = 100.0


def identified(r: Mapping[str, Any]) -> bool:
    """Whether a tidy row's estimate is identified: a finite estimate and standard error below
    :data:`MAX_IDENTIFIED_SE`, and, where the exp scale is reported, an interval with finite,
    non-zero ends."""
    if not (finite(r.get("estimate")) and finite(r.get("std_error"))):
        return False
    if float(r["std_error"]) > MAX_IDENTIFIED_SE:
        return False
    if finite(r.get("exp_estimate")):
        low, high = r.get("exp_conf_low"), r.get("exp_conf_high")
        if not (finite(low) and finite(high)) or float(low) <= 0.0:
            return False
    return True


def is_nuisance(term: str) -> bool:
    """Intercepts, zero-inflation terms and visit (week) effects: needed by the model, not an
    answer to the question; they go to the statistical appendix."""
    t = str(term)
    return t == "Intercept" or t.startswith("zero_") or "week" in t.lower() or t.startswith("log")


def _titles(entries: Iterable[ModelEntry] | None) -> dict[str, str]:
    return {
        e.name: e.description.title + (", adjusted" if e.adjusted else "") for e in entries or ()
    }


def _variance(r: Mapping[str, Any]) -> str:
    return "robust (sandwich)" if bool(r.get("robust")) else "model-based"


def effect_table(
    estimates: pd.DataFrame,
    config: Mapping[str, Any],
    entries: Iterable[ModelEntry] | None = None,
) -> pd.DataFrame:
    """The intervention effect of every model, one row each in config order: plain title (with
    the configured name in column ``internal name``, shown in small print), estimand family,
    effect measure, estimate with 95% CI (ratios to 2 decimals), p-value, variance, and status
    (``not estimable: message`` for a failed model, ``not identified`` for a boundary
    estimate). The other terms are in :func:`model_table` (appendix)."""
    entries = list(model_entries(config) if entries is None else entries)
    described = {e.name: e for e in entries}
    rows = []
    for r in intervention_rows(estimates, config).to_dict("records"):
        e = described.get(r["model"])
        if e is None:
            continue
        d = e.description
        conv = bool(r["converged"]) and r.get("term") == intervention_term(config)
        ok = conv and identified(r)
        if ok and d.ratio:
            est = ratio_ci(r, 2)
        elif ok:
            est = f"{fmt_num(r['estimate'], 2)} ({fmt_ci(r['conf_low'], r['conf_high'], 2)})"
        else:
            est = ""
        msg = r.get("message") if isinstance(r.get("message"), str) else ""
        status = "estimated" if ok else ("not identified" if conv else f"not estimable: {msg}")
        rows.append(
            {
                "model": d.title + (", adjusted" if e.adjusted else ""),
                "internal name": e.name,
                "estimand": d.group,
                "effect measure": d.effect_measure or "difference",
                "estimate (95% CI)": est,
                "p": fmt_p(r["p_value"]) if ok else "",
                "variance": _variance(r),
                "status": status,
            }
        )
    cols = ["model", "internal name", "estimand", "effect measure", "estimate (95% CI)", "p"]
    return pd.DataFrame(rows, columns=[*cols, "variance", "status"])


def model_table(
    estimates: pd.DataFrame,
    min_cell: int = 5,
    cells: CohortCells | None = None,
    entries: Iterable[ModelEntry] | None = None,
) -> pd.DataFrame:
    """Every row of every tidy table, formatted (the statistical appendix): plain model title
    with its configured name, term, log-scale estimate and SE (3 decimals), ratio with 95% CI,
    p-value, counts. A term that is not identified (:func:`identified`) shows ``not
    identified`` instead of numbers; a failed model keeps its row (its message is in
    :func:`convergence_table`). In a small cohort (`cells`.small) the models' participant and
    event totals and the intercepts of rate models are hidden (``[s]``): with the arms'
    exposure they would give suppressed event counts back."""
    titles = _titles(entries)
    small = cells is not None and cells.small
    analysed = cells.values.get(("analysed", "total")) if cells is not None else None
    rows = []
    for r in estimates.to_dict("records"):
        conv = bool(r["converged"])
        ok = identified(r)
        hide_term = small and str(r["term"]) == "Intercept" and finite(r.get("exp_estimate"))
        n_part = r["n_participants"]
        if small:
            same = finite(n_part) and analysed is not None and int(n_part) == int(analysed)
            part = cells.text(("analysed", "total")) if same else SUPPRESSED
            events = SUPPRESSED
        else:
            part = fmt_count(n_part, min_cell)
            events = fmt_count(r["n_events"], min_cell)
        if hide_term:
            numbers = dict.fromkeys(["estimate (log)", "SE", "ratio (95% CI)", "p"], SUPPRESSED)
        elif not ok and finite(r.get("estimate")):
            numbers = {"estimate (log)": "not identified", "SE": "", "ratio (95% CI)": "", "p": ""}
        else:
            numbers = {
                "estimate (log)": fmt_num(r["estimate"], 3),
                "SE": fmt_num(r["std_error"], 3),
                "ratio (95% CI)": ratio_ci(r, 2) if finite(r["exp_estimate"]) else "",
                "p": fmt_p(r["p_value"]),
            }
        rows.append(
            {
                "model": titles.get(r["model"], r["model"]),
                "internal name": r["model"],
                "term": r["term"],
                **numbers,
                "variance": _variance(r),
                "participants": part,
                "events": events,
                "converged": "yes" if conv else "NO (see Convergence)",
            }
        )
    return pd.DataFrame(rows)


def ratio_ci(r: Mapping[str, Any], digits: int = 2) -> str:
    """``ratio (low–high)`` from a tidy row's exp_* columns."""
    ci = fmt_ci(r["exp_conf_low"], r["exp_conf_high"], digits)
    return f"{fmt_num(r['exp_estimate'], digits)} ({ci})"


def convergence_table(
    estimates: pd.DataFrame, entries: Iterable[ModelEntry] | None = None
) -> pd.DataFrame:
    """One row per model: converged, log-likelihood and message (with `entries`, the model's
    plain title and its configured name in column ``internal name``)."""
    titles = _titles(entries)
    rows = []
    for name, g in estimates.groupby("model", sort=False):
        msgs = sorted({str(m) for m in g["message"] if isinstance(m, str) and m})
        ll = g["log_likelihood"].dropna()
        rows.append(
            {
                "model": titles.get(str(name), name),
                **({"internal name": name} if entries is not None else {}),
                "converged": "yes" if g["converged"].astype(bool).all() else "NO",
                "log-likelihood": fmt_num(ll.iloc[0], 2) if len(ll) else "",
                "message": "; ".join(msgs),
            }
        )
    return pd.DataFrame(rows)


# Float columns that hold whole numbers (a column with a missing value is read as float).
INTEGER_COLUMN = re.compile(
    r"replicates|^n$|^n_|_n$|count|events|participants|seed|chunk|week|^k$|^df$|_df$"
)


def format_frame(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Round the float columns for display (p-value columns as :func:`fmt_p`, whole-number
    columns such as ``replicates`` as integers)."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            whole = out[col].dropna()
            if "p_value" in str(col) or col == "p":
                out[col] = out[col].map(fmt_p)
            elif INTEGER_COLUMN.search(str(col)) and (whole == whole.round()).all():
                out[col] = out[col].map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
            else:
                out[col] = out[col].map(lambda v: fmt_num(v, digits))
    out = out.astype(object)
    return out.where(out.notna(), "")


def crude_vs_adjusted(estimates: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """Intervention ratio of each model and its ``_adjusted`` variant side by side."""
    from recurstudy.sensitivity import adjusted_pairs

    out = [
        {"model": name, "crude (95% CI)": ratio_ci(a), "adjusted (95% CI)": ratio_ci(b)}
        for name, a, b in adjusted_pairs(intervention_rows(estimates, config))
    ]
    return pd.DataFrame(out, columns=["model", "crude (95% CI)", "adjusted (95% CI)"])


# ------------------------------------------------------------------------------ flow


def flow_table(
    flow: Mapping[str, Any], min_cell: int = 5, cells: CohortCells | None = None
) -> pd.DataFrame:
    """CONSORT participant flow by arm: received, excluded by validation, analysed.

    Zero counts are shown (nobody excluded identifies nobody); other counts below `min_cell` are
    suppressed, with secondary suppression along both relations (received = excluded +
    analysed in each column, arms adding up to the total in each row), hiding excluded, then
    received cells before analysed ones. With `cells` (the report-wide plan of
    :func:`~recurstudy.report.disclosure.cohort_cells`), its hidden cells instead.
    """
    fp = flow["participants"]
    control, intervention = arm_labels(flow)
    roles = ["control", "intervention"]
    if fp["received_by_arm"].get("other", 0):
        roles.append("other")
    names = {"control": control, "intervention": intervention, "other": "other / invalid arm"}
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
    if cells is not None:  # the report-wide plan (the same cells hidden in every table)
        primary = {c for c in cells.primary if c in values}
        secondary = {c for c in cells.secondary if c in values}
    rows = []
    for key, label in stages:
        row = {"stage": label}
        for c in cols:
            text = str(values[(key, c)])
            row[names.get(c, "Total")] = cell_text((key, c), text, primary, secondary, min_cell)
        rows.append(row)
    reasons = fp.get("excluded_by_reason") or {}
    for reason, k in sorted(reasons.items()):
        row = {"stage": f"   reason: {reason}"}
        for c in cols:
            row[names.get(c, "Total")] = ""
        row["Total"] = fmt_count(k, min_cell, suppress_zero=False)
        rows.append(row)
    return pd.DataFrame(rows)


def record_flow_table(
    flow: Mapping[str, Any], min_cell: int = 5, cells: CohortCells | None = None
) -> pd.DataFrame:
    """Rows of the episode and pain-score tables received, excluded and analysed. When the
    report-wide plan `cells` hides the total event count, the episode rows are hidden too (the
    analysed episodes are that total)."""
    rows = []
    hide_episodes = cells is not None and cells.hidden(("events", "total"))
    for table, label in (("episodes", "Episodes"), ("pain_scores", "Pain scores")):
        t = flow.get(table)
        if not t or not t.get("received"):
            continue
        hide = hide_episodes and table == "episodes"
        rows.append(
            {
                "table": label,
                "received": SUPPRESSED if hide else str(t["received"]),
                "excluded": (
                    SUPPRESSED if hide else fmt_count(t["excluded"], min_cell, suppress_zero=False)
                ),
                "analysed": SUPPRESSED if hide else str(t["analysed"]),
            }
        )
    return pd.DataFrame(rows, columns=["table", "received", "excluded", "analysed"])


# ------------------------------------------------------------------------------ Table 1


def arm_columns(frame: pd.DataFrame, config: Mapping[str, Any]) -> list[tuple[str, pd.Series]]:
    """``(label, mask)`` of the control arm, the intervention arm and everyone."""
    control, intervention = arm_labels(config)
    arm = frame[ARM].astype(str)
    return [
        (control, arm == control),
        (intervention, arm == intervention),
        ("Overall", pd.Series(True, index=frame.index)),
    ]


def table1(
    participants: pd.DataFrame,
    config: Mapping[str, Any],
    min_cell: int | None = None,
    cells: CohortCells | None = None,
) -> pd.DataFrame:
    """Table 1: baseline characteristics by arm with disclosure control.

    Rows: site, each declared covariate under its label (``study.labels``; numeric: mean (SD),
    or median [Q1, Q3] for integer columns; categorical/boolean: n (%) per level in natural
    order, missing as its own level last), follow-up in months and the reason follow-up ended.
    Columns: the two arms and overall, headed with their N. Category counts below `min_cell`
    (zero included: "no woman in arm B" is a disclosure) show ``<5``; secondary suppression runs
    per variable over rows (arm + arm = overall) and columns (levels add up to the arm's N). A
    summary of fewer than `min_cell` values is not shown. With `cells` (the report-wide plan),
    the arms' N are shown as every other table shows them.
    """
    min_cell = int(config.get("min_cell", 5) if min_cell is None else min_cell)
    df = participants.copy()
    arms = arm_columns(df, config)
    n_arm = {name: int(mask.sum()) for name, mask in arms}
    small_arm = {name for name, n in n_arm.items() if n < min_cell}
    headers = {name: f"{name} (N={fmt_count(n, min_cell)})" for name, n in n_arm.items()}
    if cells is not None:  # the arms' N as every other table shows them
        control, intervention = arm_labels(config)
        for name, role in ((control, "control"), (intervention, "intervention")):
            headers[name] = f"{name} (N={cells.text(('analysed', role))})"
        headers["Overall"] = f"Overall (N={cells.text(('analysed', 'total'))})"
    rows: list[dict[str, str]] = []

    def categorical(label: str, series: pd.Series, column: str = "") -> None:
        s = series.astype("object").where(series.notna(), "missing").astype(str)
        levels = level_order(dict(config), column, set(s) - {"missing"})
        levels += ["missing"] if (s == "missing").any() else []
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
                row[headers[name]] = cell_text((lev, name), text, primary, secondary, min_cell)
            rows.append(row)

    def numeric(label: str, series: pd.Series, integer: bool) -> None:
        x = pd.to_numeric(series, errors="coerce").astype(float)
        summary = "median [Q1, Q3]" if integer else "mean (SD)"
        row = {"characteristic": f"{label}, {summary}", "level": ""}
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
                row[headers[name]] = cell_text(
                    ("missing", name), str(miss[name]), primary, secondary, min_cell
                )
            rows.append(row)

    if "site" in df:
        has_label = "site" in ((config.get("study") or {}).get("labels") or {})
        site_label = covariate_label(dict(config), "site") if has_label else "Site"
        categorical(site_label, df["site"], "site")
    for col, ctype in (config.get("covariates") or {}).items():
        if col not in df:
            continue
        label = covariate_label(dict(config), col)
        if ctype in ("categorical", "boolean"):
            categorical(label, df[col], col)
        else:
            integer = ctype == "integer" or pd.api.types.is_integer_dtype(df[col])
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


def _rate_text(row: Mapping[str, Any], digits: int) -> str:
    ci = fmt_ci(row["conf_low"], row["conf_high"], digits)
    return f"{fmt_num(row['estimate'], digits)} ({ci})" if ci else fmt_num(row["estimate"], digits)


def rates_table(
    rates: pd.DataFrame,
    config: Mapping[str, Any],
    cells: CohortCells | None = None,
    min_cell: int | None = None,
) -> pd.DataFrame:
    """Events and time at risk per arm, the rate per 100 participant-months and per
    participant-year with 95% CIs (robust, from ``results/rates.csv``:
    :func:`recurstudy.rates.rate_summary`), then the rate ratio and the rate difference per 100
    participant-years.

    Counts follow the report-wide plan `cells` (:func:`~recurstudy.report.disclosure.
    cohort_cells`); without it, primary suppression only. A hidden event count hides its arm's
    rate; in a small cohort every arm's exposure and rate and the rate difference are hidden (the
    ratio stays: it is the study's answer, and with the exposures hidden it gives no count back).
    """
    min_cell = int(config.get("min_cell", 5) if min_cell is None else min_cell)
    control, intervention = arm_labels(config)
    events = study_text(dict(config))["events"]
    small = cells is not None and cells.small
    role = {control: "control", intervention: "intervention"}
    rows = []
    per = rates[rates["quantity"] == "rate"]
    for label in (control, intervention):
        sub = per[per["arm"].astype(str) == label]
        if sub.empty:
            continue
        by_unit = {u: r for u, r in zip(sub["unit"], sub.to_dict("records"), strict=True)}
        first = sub.iloc[0]
        key = role[label]
        if cells is not None:
            n_text, k_text = cells.text(("analysed", key)), cells.text(("events", key))
            hidden = small or cells.hidden(("events", key))
        else:
            n_text = fmt_count(first["participants"], min_cell)
            k_text = fmt_count(first["events"], min_cell)
            hidden = int(first["events"]) < min_cell
        months = float(first["exposure_days"]) / DAYS_PER_MONTH
        rows.append(
            {
                "": label,
                "participants": n_text,
                events: k_text,
                "participant-months": SUPPRESSED if small else f"{months:.0f}",
                "per 100 participant-months (95% CI)": (
                    SUPPRESSED if hidden else _rate_text(by_unit["per 100 participant-months"], 1)
                ),
                "per participant-year (95% CI)": (
                    SUPPRESSED if hidden else _rate_text(by_unit["per participant-year"], 2)
                ),
            }
        )
    blank = {"participants": "", events: "", "participant-months": ""}
    for q, label, digits in (
        ("rate_ratio", f"rate ratio, {intervention} vs {control}", 2),
        ("rate_difference", "rate difference per 100 participant-years", 1),
    ):
        hit = rates[rates["quantity"] == q]
        if hit.empty:
            continue
        text = _rate_text(hit.iloc[0], digits)
        if q == "rate_difference" and small:
            text = SUPPRESSED
        rows.append(
            {
                "": label,
                **blank,
                "per 100 participant-months (95% CI)": text if q == "rate_ratio" else "",
                "per participant-year (95% CI)": text if q == "rate_difference" else "",
            }
        )
    return pd.DataFrame(rows)


def events_by_role(counts: pd.DataFrame, config: Mapping[str, Any]) -> dict[str, int]:
    """Events of the analysed participants per arm role (``control``, ``intervention``), for
    :func:`~recurstudy.report.disclosure.cohort_cells`."""
    control, intervention = arm_labels(config)
    arm = counts[ARM].astype(str)
    return {
        role: int(counts.loc[(arm == label).to_numpy(), "n_episodes"].sum())
        for role, label in (("control", control), ("intervention", intervention))
    }


# ------------------------------------------------------------------------------ claims


CONTRAST_TEXT = {
    "between_arm": "between arms",
    "within_arm": (
        "within the intervention arm (descriptive: includes the control arm's own change)"
    ),
}


def claims_table(claims: pd.DataFrame) -> pd.DataFrame:
    """Each claim with its role (primary or secondary), estimate on the claim's scale, 95% and
    90% intervals, the equivalence (TOST) and multiplicity-adjusted p-values, verdict, reason
    and power."""
    rows = []
    for r in claims.itertuples(index=False):
        est = getattr(r, "estimate", float("nan"))
        primary = bool(getattr(r, "primary", False))
        contrast = getattr(r, "contrast", "")
        contrast = CONTRAST_TEXT.get(contrast, "") if isinstance(contrast, str) else ""
        margin = getattr(r, "margin", float("nan"))
        rows.append(
            {
                "claim": r.claim_id,
                "role": "primary" if primary else f"secondary ({getattr(r, 'multiplicity', '')})",
                "statement": r.statement,
                "model": r.model + (f"; {contrast}" if contrast else ""),
                "claimed": fmt_pct(r.claimed) + (f" ± {fmt_pct(margin)}" if finite(margin) else ""),
                "estimated reduction (95% CI)": (
                    f"{fmt_pct(est)} ({fmt_pct(r.conf_low)} to {fmt_pct(r.conf_high)})"
                    if finite(est)
                    else "not estimable"
                ),
                "90% CI": (
                    f"{fmt_pct(r.conf_low_90)} to {fmt_pct(r.conf_high_90)}"
                    if finite(getattr(r, "conf_low_90", None))
                    else ""
                ),
                "interval": r.interval if isinstance(getattr(r, "interval", None), str) else "",
                "p (no effect)": fmt_p(r.p_value_no_effect),
                "p (TOST)": fmt_p(getattr(r, "p_value_tost", None)),
                "p (adjusted)": fmt_p(getattr(r, "p_value_adjusted", None)),
                "verdict": r.verdict,
                "reason": r.reason,
                "power": (
                    fmt_pct(r.power, 1) if finite(getattr(r, "power", None)) else "not simulated"
                ),
            }
        )
    return pd.DataFrame(rows)


def claims_summary(
    claims: pd.DataFrame, entries: Iterable[ModelEntry] | None = None
) -> pd.DataFrame:
    """The claims as the first screen shows them: claim, role, the primary model's plain title
    (configured name in ``internal name``), claimed and estimated reduction with 95% CI, verdict
    and power; the TOST and adjusted p-values and the 90% interval are in :func:`claims_table`
    (appendix)."""
    titles = _titles(entries)
    full = claims_table(claims)
    out = pd.DataFrame(
        {
            "claim": full["claim"],
            "role": full["role"],
            "model": [titles.get(str(m), str(m)) for m in claims["model"]],
            "internal name": claims["model"].astype(str).to_numpy(),
            "claimed reduction": full["claimed"],
            "estimated reduction (95% CI)": full["estimated reduction (95% CI)"],
            "verdict": full["verdict"],
            "power": full["power"],
        }
    )
    return out


POWER_NAMES = {
    "claim_id": "claim",
    "power_mc_se": "power MC SE",
    "mde_80": "MDE (80% power)",
    "mde_80_mc_se": "MDE MC SE",
    "mde_80_normal": "MDE, normal approximation",
    "power_informative_dropout": "power, informative dropout",
}


POWER_COLUMNS = [
    "claim_id",
    "model",
    "claimed",
    "power",
    "power_mc_se",
    "mde_80",
    "mde_80_mc_se",
    "mde_80_normal",
    "power_informative_dropout",
    "replicates",
]


def power_table(claims: pd.DataFrame) -> pd.DataFrame:
    """Each claim's simulated power and minimum detectable reduction (MDE), rounded, with
    readable column names; replicates as whole numbers."""
    out = format_frame(claims[[c for c in POWER_COLUMNS if c in claims]], 2)
    return out.rename(columns=POWER_NAMES)


def design_table(
    design: Mapping[str, Any],
    participants: pd.DataFrame | None = None,
    min_cell: int = 5,
    cells: CohortCells | None = None,
) -> pd.DataFrame:
    """The simulation design in a few lines a reader can check: participants, allocation,
    follow-up (median and a range whose ends each describe `min_cell` participants, from the
    participants table; never one person's value), control-arm rate, dispersion and dropout
    (a share that hides fewer than `min_cell` people). In a small cohort (`cells`) the control
    rate is hidden with the control events."""
    n = int(design.get("n", 0))
    rows = [("participants", str(n))]
    alloc = design.get("allocation")
    if finite(alloc):
        rows.append(("allocation to intervention", f"{100 * float(alloc):.0f}%"))
    planned = design.get("followup_days")
    if finite(planned):
        rows.append(("planned follow-up", f"{float(planned) / DAYS_PER_MONTH:.1f} months"))
    if participants is not None and {"enrolled_on", "followup_end"} <= set(participants):
        days = (
            pd.to_datetime(participants["followup_end"])
            - pd.to_datetime(participants["enrolled_on"])
        ).dt.days.to_numpy(float)
        months = days / DAYS_PER_MONTH
        if len(months) >= min_cell:
            low, high = kanon_range(months, min_cell)
            text = f"median {np.median(months):.1f} months"
            if finite(low):
                text += (
                    f"; range {low:.1f} to {high:.1f} (each end the mean of the {min_cell} "
                    "shortest or longest)"
                )
            rows.append(("observed follow-up", text))
    rate = design.get("rate_per_day")
    control_hidden = cells is not None and (cells.small or cells.hidden(("events", "control")))
    if finite(rate):
        value = (
            SUPPRESSED
            if control_hidden
            else f"{100 * float(rate) * DAYS_PER_MONTH:.1f} per 100 participant-months"
        )
        rows.append(("control-arm event rate", value))
    disp = design.get("frailty_var")
    if disp is not None:
        rows.append(
            (
                "dispersion (negative binomial 1/theta, frailty variance)",
                fmt_num(disp, 2) if finite(disp) else "not estimable (Poisson design)",
            )
        )
    drop = design.get("dropout")
    if finite(drop) and n:
        k = int(round(float(drop) * n))
        rows.append(("ended follow-up early", coarse_share(k, n, min_cell)))
    return pd.DataFrame(
        [{"parameter": k, "value": v} for k, v in rows], columns=["parameter", "value"]
    )


# ------------------------------------------------------------------------------ pain


def pain_means(
    pain_scores: pd.DataFrame, participants: pd.DataFrame, config: Mapping[str, Any]
) -> pd.DataFrame:
    """Observed mean NRS by arm and visit week (``round(days since enrolment / 7)``), with n,
    SD and a 95% t interval; cells with fewer than `min_cell` participants are flagged."""
    min_cell = int(config.get("min_cell", 5))
    df = pain_scores.merge(participants[[ID, ARM, "enrolled_on"]], on=ID, how="inner")
    days = (pd.to_datetime(df["assessed_on"]) - pd.to_datetime(df["enrolled_on"])).dt.days
    df["week"] = np.round(days / 7.0).astype(int)
    df[ARM] = df[ARM].astype(str)
    rows = []
    for (arm, week), g in df.groupby([ARM, "week"], sort=True):
        per = g.groupby(ID)["nrs"].mean()
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
    """The observed means as a wide table: weeks as rows, ``mean (SD), n`` per arm (control,
    intervention; a visit with fewer than `min_cell` participants shows ``n<5``)."""
    min_cell = int(config.get("min_cell", 5))
    if means.empty:
        return pd.DataFrame()
    arms = list(arm_labels(config))
    rows = []
    for week, g in means.groupby("week", sort=True):
        row = {"week": int(week), **{a: "" for a in arms}}
        for r in g.itertuples(index=False):
            if r.suppressed:
                row[r.arm] = f"n<{min_cell}"
            else:
                row[r.arm] = f"{r.mean:.2f} ({fmt_num(r.sd)}), n={r.n}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


# ------------------------------------------------------------------------------ provenance


def run_table(config: Mapping[str, Any], source_commit: str) -> pd.DataFrame:
    """The run's source commit, design, minimum cell size and power seed."""
    rows = [
        ("recurstudy source commit", source_commit),
        ("design", config.get("design", "")),
        ("minimum cell size", config.get("min_cell", 5)),
        ("power seed", (config.get("power") or {}).get("seed", "")),
    ]
    return pd.DataFrame([{"item": k, "value": str(v)} for k, v in rows])


def versions_table(versions: Mapping[str, str]) -> pd.DataFrame:
    """Python's and the packages' versions, one a row."""
    return pd.DataFrame(
        [{"package": k, "version": v} for k, v in versions.items()], columns=["package", "version"]
    )
