"""The report's figures: CONSORT-style participant flow, distribution of event counts per
participant, Kaplan-Meier with a number-at-risk table, mean cumulative function (with the
Ghosh-Lin marginal mean beside it when a model wrote one), forest plot of the intervention effect
grouped by estimand, pain-score trajectories, and a placeholder.

matplotlib ``Figure`` objects (Agg, no pyplot state), fixed size and dpi; :func:`png_bytes` saves
them without metadata, so the same data give the same bytes. Axis labels and titles speak of the
study's own event (``study.event``); text from the config or data is drawn as plain text (TeX off,
``$`` escaped so that mathtext never reads it). Counts go through
:mod:`recurstudy.report.disclosure` (``<5``, ``[s]``), as in the tables.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.config import study_text
from recurstudy.contract import ARM, arm_labels
from recurstudy.report.disclosure import cell_text, fmt_count, suppress
from recurstudy.report.formatting import finite, fmt_p, html_text, mpl_text

ARM_COLOURS = ("#0072B2", "#D55E00", "#009E73")  # Okabe-Ito: readable in colour-blind vision
DPI = 100
# Text is never TeX: labels from the config are drawn as the characters they are made of.
RC = {"text.usetex": False, "svg.hashsalt": "recurstudy", "path.simplify": True}


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):
        return Figure(figsize=(width, height), dpi=DPI)


def png_bytes(fig) -> bytes:
    """The figure as PNG: fixed dpi, no metadata (same bytes on every run)."""
    import matplotlib
    from matplotlib.text import Text

    for t in fig.findobj(Text):  # whatever the global rcParams say: no TeX
        t.set_usetex(False)
    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def img_html(png: bytes, alt: str, caption: str | None = None) -> str:
    """A ``<figure>`` with the PNG embedded as a data: URI (no file, no request); `alt` and
    `caption` are escaped."""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{html_text(caption)}</figcaption>" if caption else ""
    return (
        f'<figure class="rs-figure"><img alt="{html_text(alt)}" '
        f'src="data:image/png;base64,{data}"/>{cap}</figure>'
    )


def _at_risk(surv: pd.DataFrame, t: float) -> int:
    later = surv[surv["time"] >= t]
    if len(later):
        return int(later["n_risk"].iloc[0])
    last = surv.iloc[-1]
    return int(last["n_risk"] - last["n_event"] - last["n_censor"])


def _arm_rows(frame: pd.DataFrame, arm: str) -> pd.DataFrame:
    return frame[frame[ARM].astype(str) == arm].sort_values("time")


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
    words = study_text(dict(config))
    fig = _figure(8, 5.6)
    gs = fig.add_gridspec(2, 1, height_ratios=[4, 1], hspace=0.35)
    ax = fig.add_subplot(gs[0])
    tab = fig.add_subplot(gs[1], sharex=ax)
    arms = list(arm_labels(config))
    tmax = float(survival["time"].max()) if len(survival) else 1.0
    ticks = np.arange(0, tmax + 1e-9, step) if tmax >= step else np.array([0.0, tmax])
    for i, arm in enumerate(arms):
        s = _arm_rows(survival, arm)
        if s.empty:
            continue
        t = np.concatenate([[0.0], s["time"].to_numpy(float)])
        y = np.concatenate([[1.0], s["surv"].to_numpy(float)])
        lo = np.concatenate([[1.0], s["conf_low"].to_numpy(float)])
        hi = np.concatenate([[1.0], s["conf_high"].to_numpy(float)])
        col = ARM_COLOURS[i % len(ARM_COLOURS)]
        ax.step(t, y, where="post", color=col, label=mpl_text(arm), linewidth=1.8)
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
    ax.set_ylabel(mpl_text(f"Free of {words['events']}"))
    ax.set_title(mpl_text(f"Time to first {words['event']} (Kaplan-Meier, 95% CI)"))
    if logrank_p is not None and finite(logrank_p):
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
    tab.set_yticklabels([mpl_text(a) for a in reversed(arms)])
    tab.set_ylim(-0.6, len(arms) - 0.4)
    tab.set_xticks(ticks)
    tab.set_xlabel("Days since enrolment")
    tab.set_title("Number at risk", fontsize=9, loc="left")
    for sp in ("top", "right", "left"):
        tab.spines[sp].set_visible(False)
    tab.tick_params(left=False)
    for label in ax.get_xticklabels():
        label.set_visible(False)
    return fig


def _mcf_arm(frame: pd.DataFrame, arm: str, min_cell: int, value: str) -> pd.DataFrame:
    """One arm's rows of a mean-function table, cut where fewer than `min_cell` rows remain at
    risk (``n_risk``, when the table has it): a step drawn from a handful of participants would
    show their own episodes."""
    s = _arm_rows(frame, arm)
    s = s[np.isfinite(s[value].to_numpy(float))]
    if "n_risk" in s and len(s):
        s = s[s["n_risk"].to_numpy(float) >= min_cell]
    return s


def _step_panel(ax, frame: pd.DataFrame, config: Mapping[str, Any], value: str, cut: dict) -> None:
    """Draw one step curve per arm (with its 95% band when the table has one)."""
    band = {"conf_low", "conf_high"} <= set(frame.columns)
    for i, arm in enumerate(arm_labels(config)):
        s = _arm_rows(frame, arm)
        s = s[np.isfinite(s[value].to_numpy(float))]
        if arm in cut:
            s = s[s["time"].to_numpy(float) <= cut[arm]]
        if s.empty:
            continue
        col = ARM_COLOURS[i % len(ARM_COLOURS)]
        t = np.concatenate([[0.0], s["time"].to_numpy(float)])
        y = np.concatenate([[0.0], s[value].to_numpy(float)])
        if band:
            lo = np.concatenate([[0.0], s["conf_low"].to_numpy(float)])
            hi = np.concatenate([[0.0], s["conf_high"].to_numpy(float)])
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(
                t, np.where(ok, lo, y), np.where(ok, hi, y), step="post", color=col, alpha=0.2,
                linewidth=0,
            )  # fmt: skip
        ax.step(t, y, where="post", color=col, label=mpl_text(arm), linewidth=1.8)
    ax.set_xlabel("Days since enrolment")
    ax.legend(loc="upper left", frameon=False)
    ax.grid(alpha=0.3)


def mcf_cutoffs(mcf: pd.DataFrame, config: Mapping[str, Any]) -> dict[str, float]:
    """Per arm, the last time at which at least `min_cell` rows are at risk (the MCF, and the
    marginal mean beside it, are drawn up to there); arms with no such time map to -1 (not
    drawn)."""
    min_cell = int(config.get("min_cell", 5))
    out = {}
    for arm in arm_labels(config):
        s = _mcf_arm(mcf, arm, min_cell, "mcf")
        out[arm] = float(s["time"].max()) if len(s) else -1.0
    return out


def mcf_figure(mcf: pd.DataFrame, config: Mapping[str, Any], marginal: pd.DataFrame | None = None):
    """Mean cumulative number of events per participant by arm (Nelson-Aalen type), with the
    95% band (``conf_low``/``conf_high``: plain interval from the participant-clustered robust
    standard error) as a light step fill per arm when the table has it.

    Each arm's curve stops at the last time with at least `min_cell` rows at risk. With
    `marginal` (a Ghosh-Lin model's ``marginal_mean.csv``: arm, time, mean, std_err,
    conf_low, conf_high), a second panel to the right, on the same y axis, draws the marginal
    mean number of events with death as a terminal event, cut at the same times: two panels,
    not overlaid, because the two estimate different things (the MCF treats a death as
    censoring; the marginal mean counts no further events after it).
    """
    words = study_text(dict(config))
    cut = mcf_cutoffs(mcf, config)
    band = {"conf_low", "conf_high"} <= set(mcf.columns)
    if marginal is None or marginal.empty:
        fig = _figure(8, 4.5)
        ax = fig.add_subplot(1, 1, 1)
        _step_panel(ax, mcf, config, "mcf", cut)
        ax.set_ylabel(mpl_text(f"Mean cumulative {words['events']}"))
        title = f"Mean cumulative function of recurrent {words['events']}"
        ax.set_title(mpl_text(title + (" (95% CI, robust)" if band else "")))
        return fig
    fig = _figure(11, 4.5)
    left = fig.add_subplot(1, 2, 1)
    right = fig.add_subplot(1, 2, 2, sharey=left)
    _step_panel(left, mcf, config, "mcf", cut)
    _step_panel(right, marginal, config, "mean", cut)
    left.set_ylabel(mpl_text(f"Mean cumulative {words['events']}"))
    left.set_title(mpl_text("Mean cumulative function (death as censoring)"), fontsize=10)
    right.set_title(mpl_text("Marginal mean, Ghosh-Lin (death as terminal event)"), fontsize=10)
    fig.suptitle(mpl_text(f"Recurrent {words['events']} per participant (95% CI)"))
    return fig


# ------------------------------------------------------------------------------ forest

# The estimand families in the order the forest shows them, with their headings.
GROUP_HEADINGS = {
    "marginal rate": "Marginal rate or mean",
    "first-episode hazard": "First-event hazard",
    "conditional": "Conditional (given history or frailty)",
    "mean difference": "Mean difference",
    "descriptive": "Descriptive",
}
AXIS_MIN, AXIS_MAX = 0.01, 100.0  # the widest ratio axis drawn; beyond it a model is off scale
RATIO_METRICS = ("rate_reduction", "hazard_reduction")  # claimed reduction r: ratio 1 - r


def _ratio_text(x: Any) -> str:
    if not finite(x):
        try:
            return "inf" if float(x) > 0 else ("-inf" if float(x) < 0 else "NA")
        except (TypeError, ValueError):
            return "NA"
    x = float(x)
    return f"{x:.2f}" if x == 0 or 0.01 <= abs(x) < 100 else f"{x:.2g}"


def _wrap(text: str, width: int = 40, lines: int = 2) -> str:
    """`text` on at most `lines` lines of `width` characters (the forest's right column)."""
    import textwrap

    parts = textwrap.wrap(text, width) or [""]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = parts[-1][: width - 1] + "…"
    return "\n".join(parts)


def _row_status(r: Mapping[str, Any]) -> str:
    """``point`` (drawn), ``off scale`` (finite but outside the axis) or ``not estimable``."""
    ratio = r.get("ratio")
    if not bool(r.get("converged", True)) or not finite(ratio) or float(ratio) <= 0:
        return "not estimable"
    if not AXIS_MIN <= float(ratio) <= AXIS_MAX:
        return "off scale"
    return "point"


def claimed_lines(claims: pd.DataFrame | None, models: Iterable[str]) -> list[tuple[float, str]]:
    """``(ratio, label)`` of each claimed effect to draw: claims of a rate or hazard reduction
    whose model is in the forest, as the ratio ``1 - claimed`` (only where it is a positive
    ratio on the axis); one line per distinct value."""
    if claims is None or claims.empty or "claimed" not in claims:
        return []
    models = set(models)
    out: dict[float, list[str]] = {}
    for c in claims.to_dict("records"):
        if c.get("metric") not in RATIO_METRICS or c.get("model") not in models:
            continue
        if not finite(c.get("claimed")):
            continue
        ratio = round(1.0 - float(c["claimed"]), 6)
        if AXIS_MIN <= ratio <= AXIS_MAX:
            out.setdefault(ratio, []).append(str(c.get("claim_id", "")))
    return [(v, ", ".join(ids)) for v, ids in out.items()]


def primary_model(claims: pd.DataFrame | None) -> str | None:
    """The model of the primary claim (``primary`` column; the first claim when none is
    marked), or None without claims."""
    if claims is None or claims.empty or "model" not in claims:
        return None
    if "primary" in claims:
        flag = claims["primary"].astype(str).str.lower().isin(("true", "1", "yes"))
        if flag.any():
            return str(claims.loc[flag, "model"].iloc[0])
    return str(claims["model"].iloc[0])


def forest_layout(
    rows: pd.DataFrame,
    config: Mapping[str, Any] | None = None,
    claims: pd.DataFrame | None = None,
    entries: Iterable[Any] | None = None,
) -> dict[str, Any]:
    """What the forest plot draws, as data (tested without looking at pixels): ``lines``, one
    dict per drawn line from top to bottom (``kind`` ``group`` or ``model``; for models:
    title, small print, status, the text on the right, whether it is the primary analysis),
    the axis ``limits``, and the ``claimed`` lines.

    A model's group is its description's estimand family (``group`` column of `rows`, else
    from `entries` or the config's models); groups follow :data:`GROUP_HEADINGS`' order,
    models keep their order within a group. A model that failed, or whose ratio is not a
    positive finite number, is ``not estimable`` (with its message); a finite ratio outside
    0.01 to 100 is ``off scale`` (drawn as an arrow at the edge, its value in the text).
    """
    if "group" in rows:
        groups = rows["group"].fillna("").astype(str).tolist()
    else:
        if entries is None and config is not None:
            from recurstudy.report.tables import model_entries

            entries = model_entries(config)
        by_name = {e.name: e.description.group for e in (entries or [])}
        groups = [by_name.get(m, "") for m in rows["model"]] if len(rows) else []
    order = list(GROUP_HEADINGS)
    records = rows.to_dict("records") if len(rows) else []
    keyed = sorted(
        zip(groups, range(len(records)), records, strict=True),
        key=lambda g: (order.index(g[0]) if g[0] in order else len(order), g[1]),
    )
    primary = primary_model(claims)
    claimed = claimed_lines(claims, [r["model"] for r in records])
    values = [1.0] + [v for v, _ in claimed]
    lines: list[dict[str, Any]] = []
    current = None
    for group, _, r in keyed:
        if group != current:
            heading = GROUP_HEADINGS.get(group, group.capitalize() if group else "Other")
            lines.append({"kind": "group", "text": heading})
            current = group
        status = _row_status(r)
        adjusted = bool(r.get("adjusted", False))
        is_primary = primary is not None and r["model"] == primary
        lo, hi = r.get("conf_low"), r.get("conf_high")
        if status == "point":
            values.append(float(r["ratio"]))
            values += [float(v) for v in (lo, hi) if finite(v) and float(v) > 0]
            text = f"{_ratio_text(r['ratio'])} ({_ratio_text(lo)}–{_ratio_text(hi)})"
        elif status == "off scale":
            text = f"{_ratio_text(r['ratio'])} ({_ratio_text(lo)}–{_ratio_text(hi)}), off scale"
        else:
            message = str(r.get("message") or "").strip()
            message = " ".join(message.split())
            text = _wrap("not estimable" + (f": {message}" if message else ""))
        small = f"{r['model']} · {r.get('measure', '')}" + (
            " · primary analysis" if is_primary else ""
        )
        lines.append(
            {
                "kind": "model",
                "model": r["model"],
                "title": str(r.get("title", r["model"])) + (", adjusted" if adjusted else ""),
                "small": small,
                "status": status,
                "text": text,
                "primary": is_primary,
                "adjusted": adjusted,
                "ratio": float(r["ratio"]) if status != "not estimable" else float("nan"),
                "conf_low": float(lo) if finite(lo) else float("nan"),
                "conf_high": float(hi) if finite(hi) else float("nan"),
            }
        )
    lo_lim = max(min(values) / 1.25, AXIS_MIN)
    hi_lim = min(max(values) * 1.25, AXIS_MAX)
    return {"lines": lines, "limits": (lo_lim, hi_lim), "claimed": claimed}


def forest_figure(
    rows: pd.DataFrame,
    config: Mapping[str, Any] | None = None,
    claims: pd.DataFrame | None = None,
    entries: Iterable[Any] | None = None,
):
    """Intervention effect (ratio, log axis, 95% CI) across models, grouped by estimand family
    (:func:`forest_layout`): each row labelled with the model's plain title and, in small
    print, its configured name and effect measure; the primary analysis (the primary claim's
    model) drawn as a larger diamond and named; each claimed effect (``1 - claimed`` of a rate
    or hazard reduction claim) drawn as a dashed vertical line; models that failed or whose
    estimate is not a finite positive ratio listed as "not estimable" with their message.
    Never fails on a non-finite or extreme estimate."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator
    from matplotlib.transforms import blended_transform_factory

    layout = forest_layout(rows, config, claims, entries)
    lines = layout["lines"]
    lo, hi = layout["limits"]
    n = max(len(lines), 1)
    height = 0.42 * n + 2.2
    fig = _figure(10, height)
    ax = fig.add_axes((0.36, 1.15 / height, 0.36, 1 - 1.85 / height))
    label_at = ax.get_yaxis_transform()
    heading_at = blended_transform_factory(fig.transFigure, ax.transData)
    for k, line in enumerate(lines):
        y = n - 1 - k
        if line["kind"] == "group":
            ax.text(
                0.01, y, mpl_text(line["text"]), transform=heading_at, ha="left", va="center",
                fontsize=9.5, fontweight="bold", color="#222222",
            )  # fmt: skip
            ax.axhline(y - 0.5, color="#dddddd", linewidth=0.6)
            continue
        colour = "#0072B2" if line["adjusted"] else "#333333"
        left = {"transform": label_at, "ha": "right", "va": "center"}
        weight = "bold" if line["primary"] else "normal"
        ax.text(-0.02, y + 0.13, mpl_text(line["title"]), fontsize=9, color=colour,
                fontweight=weight, **left)  # fmt: skip
        ax.text(-0.02, y - 0.22, mpl_text(line["small"]), fontsize=7, color="#666666", **left)
        if line["status"] == "point":
            c_lo = line["conf_low"] if finite(line["conf_low"]) and line["conf_low"] > 0 else lo
            c_hi = line["conf_high"] if finite(line["conf_high"]) else hi
            c_lo, c_hi = min(max(c_lo, lo), hi), max(min(c_hi, hi), lo)
            ax.plot([c_lo, c_hi], [y, y], color=colour, linewidth=1.5)
            for end, edge, mark in ((c_lo, lo, "<"), (c_hi, hi, ">")):
                if end == edge:  # the interval goes beyond the axis
                    ax.plot([end], [y], mark, color=colour, markersize=5, clip_on=False)
            marker, size = ("D", 9) if line["primary"] else ("s", 6)
            ax.plot([line["ratio"]], [y], marker, color=colour, markersize=size)
        elif line["status"] == "off scale":
            edge, mark = (lo, "<") if line["ratio"] < lo else (hi, ">")
            ax.plot([edge], [y], mark, color="#B00020", markersize=7, clip_on=False)
        bad = line["status"] != "point"
        ax.text(
            1.02, y, mpl_text(line["text"]), transform=label_at, ha="left", va="center",
            fontsize=9, color="#B00020" if bad else "#333333",
        )  # fmt: skip
    ax.axvline(1.0, color="#777777", linewidth=1, linestyle="--")
    for k, (value, ids) in enumerate(layout["claimed"]):
        ax.axvline(value, color="#D55E00", linewidth=1.2, linestyle=":")
        ax.annotate(
            mpl_text(f"claimed {value:g}" + (f" ({_short(ids, 24)})" if ids else "")),
            xy=(value, 1.0), xycoords=ax.get_xaxis_transform(), xytext=(0, 2 + 9 * (k % 3)),
            textcoords="offset points", ha="center", va="bottom", fontsize=7.5,
            color="#D55E00",
        )  # fmt: skip
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
    ax.grid(axis="x", alpha=0.3)
    handles = [
        Line2D([], [], color="#333333", marker="s", linewidth=1.5, label="estimate, 95% CI"),
        Line2D([], [], color="#777777", linestyle="--", label="no effect (1)"),
    ]
    models = [ln for ln in lines if ln["kind"] == "model"]
    if any(ln["adjusted"] for ln in models):
        handles.append(
            Line2D([], [], color="#0072B2", marker="s", linewidth=1.5, label="covariate-adjusted")
        )
    if any(ln["primary"] for ln in models):
        handles.append(
            Line2D([], [], color="#333333", marker="D", linestyle="", markersize=8,
                   label="primary analysis")
        )  # fmt: skip
    if layout["claimed"]:
        handles.append(Line2D([], [], color="#D55E00", linestyle=":", label="claimed effect"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    fig.suptitle("Intervention effect across models, by estimand", fontsize=11, y=0.995)
    return fig


# ------------------------------------------------------------------------------ flow

END_REASON_LABELS = {
    "completed": "completed follow-up",
    "withdrawn": "withdrew",
    "lost_to_followup": "lost to follow-up",
    "death": "died",
    "died": "died",
    "missing": "not recorded",
}
MAX_REASON_LINES = 6  # validation reasons listed in the exclusion box; the rest summed up


def end_reason_cells(
    participants: pd.DataFrame | None, config: Mapping[str, Any]
) -> tuple[list[str], dict[tuple[str, str], str]]:
    """How follow-up ended, by arm, exactly as Table 1 shows it: its levels (natural order,
    ``missing`` last) and ``{(level, arm role): text}`` under Table 1's own rule for a
    categorical row (zero hidden too; secondary suppression over the arms adding up to overall
    and the levels adding up to the arm's N; every cell of an arm under `min_cell` hidden).
    Computing it the same way means the figure hides what the table hides, so that the two
    together give nothing back by subtraction. Empty without an ``end_reason`` column."""
    from recurstudy.config import level_order

    if participants is None or "end_reason" not in participants or ARM not in participants:
        return [], {}
    min_cell = int(config.get("min_cell", 5))
    control, intervention = arm_labels(config)
    arm = participants[ARM].astype(str)
    arms = [
        ("control", arm == control),
        ("intervention", arm == intervention),
        ("overall", pd.Series(True, index=participants.index)),
    ]
    series = participants["end_reason"]
    s = series.astype("object").where(series.notna(), "missing").astype(str)
    levels = level_order(dict(config), "", set(s) - {"missing"})
    levels += ["missing"] if (s == "missing").any() else []
    values = {}
    for lev in levels:
        for name, mask in arms:
            values[(lev, name)] = int(((s == lev) & mask).sum())
    groups = [[(lev, name) for name, _ in arms] for lev in levels]
    groups += [[(lev, name) for lev in levels] for name, _ in arms if len(levels) > 1]
    primary, secondary = suppress(values, groups, min_cell)
    for name, mask in arms:
        if int(mask.sum()) < min_cell:
            primary |= {(lev, name) for lev in levels}
    cells = {c: cell_text(c, str(v), primary, secondary, min_cell) for c, v in values.items()}
    order = {r: i for i, r in enumerate(END_REASON_LABELS)}
    levels.sort(key=lambda lev: (lev == "missing", order.get(lev, len(order))))
    return levels, cells


def flow_counts(
    flow: Mapping[str, Any],
    participants: pd.DataFrame | None,
    config: Mapping[str, Any],
    cells: Any = None,
) -> dict[str, Any]:
    """The counts of the flow diagram as the reader sees them (text, after disclosure control).

    From ``results/validated/flow.json`` (received, excluded and analysed by arm, validation
    reasons) and the validated participants (how follow-up ended, by arm, among those
    analysed). Received, excluded and analysed come from the report-wide disclosure plan
    `cells` when given (an object with ``text((stage, role))``, as
    ``recurstudy.report.disclosure.cohort_cells`` makes), else under the flow table's rule
    (counts below `min_cell` show ``<5``, zero shown, secondary suppression ``[s]`` over
    received = excluded + analysed and the arms adding up to the total); how follow-up ended
    is shown as Table 1 shows it (:func:`end_reason_cells`). The validation reasons (one
    participant may fail several, so they add up to nothing) are each shown or ``<5``.
    Returns ``{"cells": {(stage, role): text}, "reasons": [(check, text)], "end_reasons":
    [level, ...], "other": bool}``; end-of-follow-up cells are keyed ``("end:<level>", role)``.
    """
    min_cell = int(config.get("min_cell", 5))
    fp = flow["participants"]
    roles = ["control", "intervention"]
    other = bool(fp.get("received_by_arm", {}).get("other", 0))
    if other:
        roles.append("other")
    values: dict[tuple[str, str], int] = {}
    stages = ("received", "excluded", "analysed")
    for key in stages:
        for r in roles:
            values[(key, r)] = int(fp.get(f"{key}_by_arm", {}).get(r, 0))
        values[(key, "total")] = int(fp.get(key, 0))
    if cells is not None:
        shown = {c: cells.text(c) for c in values}
    else:
        cols = [*roles, "total"]
        groups = [[(k, c) for k in stages] for c in cols]
        groups += [[(k, c) for c in cols] for k in stages]
        prio = {c: {"excluded": 0, "received": 1, "analysed": 2}[c[0]] for c in values}
        primary, secondary = suppress(values, groups, min_cell, suppress_zero=False, priority=prio)
        shown = {c: cell_text(c, str(v), primary, secondary, min_cell) for c, v in values.items()}
    levels, ended = end_reason_cells(participants, config)
    for (lev, role), text in ended.items():
        shown[(f"end:{lev}", role)] = text
    why = fp.get("excluded_by_reason") or {}
    listed = [
        (str(k), fmt_count(v, min_cell, suppress_zero=False))
        for k, v in sorted(why.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
    ]
    return {"cells": shown, "reasons": listed, "end_reasons": levels, "other": other}


def _short(text: Any, width: int = 48) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def flow_figure(
    flow: Mapping[str, Any],
    participants: pd.DataFrame | None,
    config: Mapping[str, Any],
    cells: Any = None,
):
    """CONSORT-style participant flow: boxes and arrows from received, beside it those excluded
    by validation with the failing checks (a participant may fail several), then per arm:
    received and excluded, how follow-up ended (completed, withdrew, lost to follow-up, died,
    from the ``end_reason`` column), and analysed. Counts as :func:`flow_counts` shows them
    (`cells`: the report-wide disclosure plan, when the report has one)."""
    data = flow_counts(flow, participants, config, cells)
    cells = data["cells"]
    arms = dict(zip(("control", "intervention"), arm_labels(config), strict=True))
    fig = _figure(10, 7.5)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")

    def box(x: float, y: float, lines: list[str], bold: bool = False, colour: str = "#f4f4f4"):
        return ax.text(
            x, y, mpl_text("\n".join(lines)), ha="center", va="center", fontsize=9,
            fontweight="bold" if bold else "normal", linespacing=1.35,
            bbox={"boxstyle": "round,pad=0.6", "facecolor": colour, "edgecolor": "#555555"},
        )  # fmt: skip

    def arrow(a, b, start=(0.5, 0.0), end=(0.5, 1.0)):
        ax.annotate(
            "", xy=end, xycoords=b, xytext=start, textcoords=a,
            arrowprops={"arrowstyle": "-|>", "color": "#555555", "linewidth": 1.1},
        )  # fmt: skip

    received = box(0.32, 0.92, ["Received", f"{cells[('received', 'total')]} participants"])
    why = [f"{_short(k)}: {v}" for k, v in data["reasons"][:MAX_REASON_LINES]]
    if len(data["reasons"]) > MAX_REASON_LINES:
        why.append(f"… and {len(data['reasons']) - MAX_REASON_LINES} more checks")
    if data["other"]:
        why.append(f"arm not one of the two: {cells[('received', 'other')]}")
    excluded_lines = [f"Excluded by validation: {cells[('excluded', 'total')]}"]
    if why:
        excluded_lines += ["failing checks (one participant may fail several):", *why]
    excluded = box(0.77, 0.80, excluded_lines, colour="#fbeeee")
    arrow(received, excluded, start=(1.0, 0.5), end=(0.0, 0.5))
    xs = {"control": 0.17, "intervention": 0.47}
    for role, x in xs.items():
        label = _short(arms[role], 34)
        a = box(
            x, 0.62,
            [label, f"received: {cells[('received', role)]}",
             f"excluded: {cells[('excluded', role)]}"],
            colour="#eaf2fa",
        )  # fmt: skip
        arrow(received, a)
        if data["end_reasons"]:
            ended = ["Follow-up ended"] + [
                f"{END_REASON_LABELS.get(r, _short(r, 30))}: {cells[(f'end:{r}', role)]}"
                for r in data["end_reasons"]
            ]
        else:
            ended = ["Follow-up ended", "reason not recorded"]
        e = box(x, 0.36, ended)
        arrow(a, e)
        analysed = box(x, 0.10, ["Analysed", f"{cells[('analysed', role)]}"], bold=True)
        arrow(e, analysed)
    for label, y in (("Enrolment", 0.92), ("Allocation", 0.62), ("Follow-up", 0.36),
                     ("Analysis", 0.10)):  # fmt: skip
        ax.text(0.005, y, label, rotation=90, ha="left", va="center", fontsize=8, color="#777777")
    return fig


# ------------------------------------------------------------------------------ episode counts


def episode_distribution(
    counts: pd.DataFrame, config: Mapping[str, Any], cells: Any = None
) -> pd.DataFrame:
    """Participants by number of events (0, 1, 2, ..., k+) and arm, disclosure-controlled.

    From ``results/analysis/counts.parquet`` (one row per analysed participant with
    ``n_episodes``). The open top category ``k+`` is the largest k such that in each arm with
    any event at least `min_cell` participants have k or more events (an arm without events is
    all in ``0``), so that the tail is never a handful of people. A category count below
    `min_cell` (zero is shown: it says that nobody had that many) is suppressed, with secondary
    suppression within an arm (its categories add up to the arm's N, shown in Table 1).
    With the report-wide disclosure plan `cells` of a *small* cohort (``cells.small``: an
    arm's participants or events hidden somewhere), every category is hidden: the categories
    would add up to the hidden counts. Columns: arm, category, order, n (the count, NaN when
    suppressed), text (what is shown: the count, ``<5`` or ``[s]``).
    """
    min_cell = int(config.get("min_cell", 5))
    arms = list(arm_labels(config))
    arm = counts[ARM].astype(str)
    n_ep = pd.to_numeric(counts["n_episodes"], errors="coerce").fillna(0).astype(int)
    top = int(n_ep.max()) if len(n_ep) else 0
    k = 1
    for cand in range(max(top, 1), 0, -1):
        with_events = [a for a in arms if ((arm == a) & (n_ep > 0)).any()]
        tails = [int(((arm == a) & (n_ep >= cand)).sum()) for a in with_events]
        if all(t >= min_cell for t in tails):
            k = cand
            break
    cats = [(str(j), j, j) for j in range(k)] + [(f"{k}+", k, None)]
    values: dict[tuple[str, str], int] = {}
    for a in arms:
        for label, lo, hi in cats:
            sel = (arm == a) & (n_ep >= lo) & ((n_ep <= hi) if hi is not None else True)
            values[(a, label)] = int(sel.sum())
    groups = [[(a, label) for label, _, _ in cats] for a in arms]
    primary, secondary = suppress(values, groups, min_cell, suppress_zero=False)
    if cells is not None and getattr(cells, "small", False):
        secondary |= set(values) - primary
    rows = []
    for a in arms:
        for order, (label, _, _) in enumerate(cats):
            cell = (a, label)
            hidden = cell in primary or cell in secondary
            rows.append(
                {
                    "arm": a,
                    "category": label,
                    "order": order,
                    "n": float("nan") if hidden else float(values[cell]),
                    "text": cell_text(cell, str(values[cell]), primary, secondary, min_cell),
                }
            )
    return pd.DataFrame(rows, columns=["arm", "category", "order", "n", "text"])


def episode_count_figure(counts: pd.DataFrame, config: Mapping[str, Any], cells: Any = None):
    """Bars of the number of participants with 0, 1, 2, ..., k+ events, side by side by arm
    (:func:`episode_distribution`; `cells`: the report-wide disclosure plan); a suppressed
    category has no bar, only its ``<5`` or ``[s]`` label."""
    words = study_text(dict(config))
    dist = episode_distribution(counts, config, cells)
    arms = list(arm_labels(config))
    cats = dist.drop_duplicates("order").sort_values("order")["category"].tolist()
    fig = _figure(8, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(arms), 1)
    top = float(np.nanmax(dist["n"].to_numpy(float))) if dist["n"].notna().any() else 1.0
    for i, a in enumerate(arms):
        s = dist[dist["arm"] == a].sort_values("order")
        x = np.arange(len(s)) - 0.4 + width * (i + 0.5)
        heights = s["n"].to_numpy(float)
        shown = np.isfinite(heights)
        col = ARM_COLOURS[i % len(ARM_COLOURS)]
        ax.bar(x[shown], heights[shown], width=width * 0.95, color=col, label=mpl_text(a))
        for xi, h, t in zip(x, heights, s["text"], strict=True):
            ax.text(
                xi, (h if np.isfinite(h) else 0.0) + 0.01 * top, mpl_text(t), ha="center",
                va="bottom", fontsize=7.5, color="#333333",
            )  # fmt: skip
    ax.set_xticks(np.arange(len(cats)))
    ax.set_xticklabels(cats)
    ax.set_ylim(0, top * 1.15 + 1)
    ax.set_xlabel(mpl_text(f"Number of {words['events']} per participant"))
    ax.set_ylabel("Participants")
    ax.set_title(mpl_text(f"Distribution of {words['events']} per participant by arm"))
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def pain_figure(means: pd.DataFrame, config: Mapping[str, Any]):
    """Observed mean NRS pain by arm and week with 95% CIs; cells under `min_cell` omitted."""
    fig = _figure(8, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for i, arm in enumerate(arm_labels(config)):
        s = means[(means["arm"].astype(str) == arm) & ~means["suppressed"].astype(bool)]
        s = s.sort_values("week")
        if s.empty:
            continue
        ax.errorbar(
            s["week"],
            s["mean"],
            yerr=[s["mean"] - s["conf_low"], s["conf_high"] - s["mean"]],
            color=ARM_COLOURS[i % len(ARM_COLOURS)],
            marker="o",
            capsize=3,
            label=mpl_text(arm),
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
    fig.text(0.5, 0.5, mpl_text(text), ha="center", va="center", fontsize=11)
    return fig
