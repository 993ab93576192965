"""The report's figures: Kaplan-Meier with a number-at-risk table, mean cumulative function,
forest plot of the intervention effect, pain-score trajectories, and a placeholder.

matplotlib ``Figure`` objects (Agg, no pyplot state), fixed size and dpi; :func:`png_bytes` saves
them without metadata, so the same data give the same bytes. Axis labels and titles speak of the
study's own event (``study.event``); labels from the config are escaped for mathtext.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.config import study_text
from recurstudy.contract import ARM, arm_labels
from recurstudy.report.disclosure import fmt_count
from recurstudy.report.formatting import finite, fmt_p, html_text, mpl_text

ARM_COLOURS = ("#0072B2", "#D55E00", "#009E73")  # Okabe-Ito: readable in colour-blind vision
DPI = 100


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


def mcf_figure(mcf: pd.DataFrame, config: Mapping[str, Any]):
    """Mean cumulative number of events per participant by arm (Nelson-Aalen type), with the
    95% band (``conf_low``/``conf_high``: plain interval from the participant-clustered robust
    standard error) as a light step fill per arm when the table has it."""
    words = study_text(dict(config))
    fig = _figure(8, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    band = {"conf_low", "conf_high"} <= set(mcf.columns)
    for i, arm in enumerate(arm_labels(config)):
        s = _arm_rows(mcf, arm)
        if s.empty:
            continue
        col = ARM_COLOURS[i % len(ARM_COLOURS)]
        t = np.concatenate([[0.0], s["time"].to_numpy(float)])
        y = np.concatenate([[0.0], s["mcf"].to_numpy(float)])
        if band:
            lo = np.concatenate([[0.0], s["conf_low"].to_numpy(float)])
            hi = np.concatenate([[0.0], s["conf_high"].to_numpy(float)])
            ax.fill_between(t, lo, hi, step="post", color=col, alpha=0.2, linewidth=0)
        ax.step(t, y, where="post", color=col, label=mpl_text(arm), linewidth=1.8)
    ax.set_xlabel("Days since enrolment")
    ax.set_ylabel(mpl_text(f"Mean cumulative {words['events']}"))
    title = f"Mean cumulative function of recurrent {words['events']}"
    ax.set_title(mpl_text(title + (" (95% CI, robust)" if band else "")))
    ax.legend(loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    return fig


def forest_figure(rows: pd.DataFrame):
    """Intervention effect (ratio, log axis, 95% CI) across models: each row labelled with the
    model's title and, in small print, its configured name and effect measure (the rows of
    :func:`recurstudy.report.tables.forest_data`); failed models are listed with their message
    instead of a point."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    n = max(len(rows), 1)
    height = 0.5 * n + 1.4
    fig = _figure(10, height)
    ax = fig.add_axes((0.36, 0.9 / height, 0.36, 1 - 1.3 / height))
    ys = np.arange(n)[::-1]
    finite_rows = rows[rows["converged"].astype(bool)] if len(rows) else rows
    lo = float(finite_rows["conf_low"].min()) if len(finite_rows) else 0.1
    hi = float(finite_rows["conf_high"].max()) if len(finite_rows) else 10.0
    lo, hi = min(lo, 1.0) / 1.25, max(hi, 1.0) * 1.25
    label_at = ax.get_yaxis_transform()
    for y, r in zip(ys, rows.to_dict("records"), strict=False):
        colour = "#333333" if not r["adjusted"] else "#0072B2"
        title = r["title"] + (", adjusted" if r["adjusted"] else "")
        small = f"{r['model']} · {r['measure']}"
        left = {"transform": label_at, "ha": "right", "va": "center"}
        ax.text(-0.02, y + 0.12, mpl_text(title), fontsize=9, color=colour, **left)
        ax.text(-0.02, y - 0.22, mpl_text(small), fontsize=7, color="#666666", **left)
        if r["converged"]:
            ax.plot([r["conf_low"], r["conf_high"]], [y, y], color=colour, linewidth=1.5)
            ax.plot([r["ratio"]], [y], "s", color=colour, markersize=6)
            text = f"{r['ratio']:.2f} ({r['conf_low']:.2f}–{r['conf_high']:.2f})"
        else:
            text = "not estimable: " + (str(r["message"])[:60] or "did not converge")
        ax.text(
            1.02,
            y,
            mpl_text(text),
            transform=label_at,
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
