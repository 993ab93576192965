"""The report's figures on small frames: each builds, shows counts through the disclosure rule
(asserted on the text and data drawn, not on pixels), gives the same PNG bytes twice (and in a
fresh process), and survives the edge cases (an arm without events, non-finite or extreme
estimates, everything suppressed, text from the config that looks like TeX or HTML)."""

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from recurstudy.report import figures

ARMS = {"control": "control", "intervention": "intervention"}
CONFIG = {"arms": ARMS, "min_cell": 5, "study": {"event": "pain episode"}}
HOSTILE_ARM = r"re-ed $\frac{1}{0}$ <script>alert(1)</script> ${"


def _texts(fig) -> list[str]:
    out = [t.get_text() for ax in fig.axes for t in ax.texts]
    out += [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [t.get_text() for t in ax.get_xticklabels()]
        legend = ax.get_legend()
        if legend is not None:
            out += [t.get_text() for t in legend.get_texts()]
    return out


def _png_chunks(png: bytes) -> list[bytes]:
    i, out = 8, []
    while i < len(png):
        n = int.from_bytes(png[i : i + 4], "big")
        out.append(png[i + 4 : i + 8])
        i += 12 + n
    return out


def _deterministic(build) -> bytes:
    a = figures.png_bytes(build())
    b = figures.png_bytes(build())
    assert a.startswith(b"\x89PNG") and a == b
    assert set(_png_chunks(a)) <= {b"IHDR", b"pHYs", b"IDAT", b"IEND"}  # no text, no time
    return a


# ------------------------------------------------------------------------------ flow


def _flow(received=(40, 3), excluded=(2, 0), reasons=None) -> dict:
    rc, ri = received
    ec, ei = excluded
    return {
        "arms": ARMS,
        "participants": {
            "received": rc + ri,
            "received_by_arm": {"control": rc, "intervention": ri, "other": 0},
            "excluded": ec + ei,
            "excluded_by_arm": {"control": ec, "intervention": ei, "other": 0},
            "excluded_by_reason": reasons or {},
            "analysed": rc + ri - ec - ei,
            "analysed_by_arm": {"control": rc - ec, "intervention": ri - ei, "other": 0},
        },
    }


def _people(reasons_c: dict, reasons_i: dict) -> pd.DataFrame:
    rows = []
    for arm, reasons in (("control", reasons_c), ("intervention", reasons_i)):
        for reason, n in reasons.items():
            rows += [{"arm": arm, "end_reason": reason}] * n
    return pd.DataFrame(rows)


def test_flow_counts_suppressed_like_the_flow_table():
    flow = _flow(
        received=(60, 50),
        excluded=(2, 10),
        reasons={"participants.age: in range": 3, "participants.sex: one of": 12},
    )
    people = _people(
        {"completed": 40, "withdrawn": 3, "lost_to_followup": 15},
        {"completed": 30, "withdrawn": 6, "lost_to_followup": 4},
    )
    data = figures.flow_counts(flow, people, CONFIG)
    cells = data["cells"]
    assert cells[("received", "total")] == "110"
    assert cells[("excluded", "control")] == "<5"  # 2 participants
    # received = excluded + analysed: one more cell of the control column is hidden
    assert "[s]" in {cells[("received", "control")], cells[("analysed", "control")]}
    # end of follow-up: withdrawn 3 (control) and lost 4 (intervention) hidden, and the cells
    # that would give them back by subtraction (within the arm, and across the reason's row)
    assert cells[("end:withdrawn", "control")] == "<5"
    assert cells[("end:lost_to_followup", "intervention")] == "<5"
    assert cells[("end:withdrawn", "intervention")] == "[s]"
    assert cells[("end:lost_to_followup", "control")] == "[s]"
    assert data["reasons"] == [
        ("participants.sex: one of", "12"),
        ("participants.age: in range", "<5"),
    ]
    fig = figures.flow_figure(flow, people, CONFIG)
    drawn = "\n".join(_texts(fig))
    for hidden in ("withdrew: 3", "lost to follow-up: 4", "participants.age: in range: 3"):
        assert hidden not in drawn
    assert "withdrew: <5" in drawn and "lost to follow-up: [s]" in drawn
    assert "Excluded by validation: 12" in drawn
    _deterministic(lambda: figures.flow_figure(flow, people, CONFIG))


def test_flow_every_cell_small_and_no_end_reason():
    flow = _flow(received=(3, 2), excluded=(0, 0))
    data = figures.flow_counts(flow, pd.DataFrame({"arm": ["control"] * 3}), CONFIG)
    assert data["end_reasons"] == []
    shown = {v for k, v in data["cells"].items() if k[0] != "excluded" and k[1] != "total"}
    assert shown <= {"<5", "[s]"}
    assert data["cells"][("received", "total")] == "5"
    assert data["cells"][("excluded", "total")] == "0"  # nobody excluded identifies nobody
    fig = figures.flow_figure(flow, None, CONFIG)
    assert any("reason not recorded" in t for t in _texts(fig))
    assert figures.png_bytes(fig).startswith(b"\x89PNG")


def test_flow_death_and_unknown_reasons_in_consort_order():
    people = _people({"completed": 20, "death": 6, "moved away": 5}, {"completed": 20, "death": 5})
    people.loc[len(people)] = {"arm": "intervention", "end_reason": None}
    assert figures.flow_counts(_flow((31, 26), (0, 0)), people, CONFIG)["end_reasons"] == [
        "completed",
        "death",
        "moved away",
        "missing",
    ]
    drawn = "\n".join(_texts(figures.flow_figure(_flow((31, 26), (0, 0)), people, CONFIG)))
    assert "died: 6" in drawn and "not recorded: <5" in drawn
    assert "moved away: [s]" in drawn  # its intervention cell is 0: hidden, as in Table 1


class _Plan:
    """A report-wide disclosure plan as the flow figure reads it (text per cell, small)."""

    def __init__(self, texts, small=False):
        self.texts, self.small = texts, small

    def text(self, key):
        return self.texts.get(key, "[s]")


def test_flow_and_distribution_follow_the_report_wide_plan():
    flow = _flow(received=(60, 50), excluded=(0, 0))
    plan = _Plan({("received", "total"): "110", ("analysed", "control"): "60"})
    data = figures.flow_counts(flow, None, CONFIG, plan)
    assert data["cells"][("received", "total")] == "110"
    assert data["cells"][("analysed", "control")] == "60"
    assert data["cells"][("received", "control")] == "[s]"  # hidden because the plan hides it
    counts = _counts({"control": [0, 1, 2] * 10, "intervention": [0, 1] * 10})
    assert figures.episode_distribution(counts, CONFIG, plan)["n"].notna().all()
    small = figures.episode_distribution(counts, CONFIG, _Plan({}, small=True))
    assert small["n"].isna().all() and set(small["text"]) == {"[s]"}


# ------------------------------------------------------------------------------ episode counts


def _counts(per_arm: dict[str, list[int]]) -> pd.DataFrame:
    rows = [
        {"arm": arm, "n_episodes": n, "exposure_days": 180.0}
        for arm, ns in per_arm.items()
        for n in ns
    ]
    return pd.DataFrame(rows)


def test_episode_distribution_merges_tail_and_suppresses():
    counts = _counts(
        {
            "control": [0] * 10 + [1] * 8 + [2] * 3 + [3] * 6 + [4] * 2 + [7] * 3 + [9],
            "intervention": [0] * 20 + [1] * 9 + [2] * 6 + [3] * 5,
        }
    )
    dist = figures.episode_distribution(counts, CONFIG)
    # tail: control has 6 with >= 4 events, intervention 5 with >= 3 events, none with >= 4
    assert list(dist.drop_duplicates("order")["category"]) == ["0", "1", "2", "3+"]
    c = dist[dist["arm"] == "control"].set_index("category")
    assert c.loc["3+", "text"] == "12"
    assert c.loc["2", "text"] == "<5" and np.isnan(c.loc["2", "n"])
    assert c.loc["1", "text"] == "[s]"  # else 2 would follow from N = 33
    i = dist[dist["arm"] == "intervention"].set_index("category")
    assert list(i["text"]) == ["20", "9", "6", "5"]
    fig = figures.episode_count_figure(counts, CONFIG)
    ax = fig.axes[0]
    heights = sorted(p.get_height() for p in ax.patches)
    assert 3 not in heights and 8 not in heights  # suppressed bars are not drawn
    assert sorted(heights) == sorted([10, 12, 20, 9, 6, 5])
    assert {"<5", "[s]"} <= set(_texts(fig))
    _deterministic(lambda: figures.episode_count_figure(counts, CONFIG))


def test_episode_distribution_arm_without_events():
    counts = _counts({"control": [0, 1, 1, 2, 2, 2, 3, 3, 5, 6, 1, 1], "intervention": [0] * 15})
    dist = figures.episode_distribution(counts, CONFIG)
    i = dist[dist["arm"] == "intervention"].set_index("category")
    assert i.iloc[0]["text"] == "15" and set(i.iloc[1:]["text"]) == {"0"}
    _deterministic(lambda: figures.episode_count_figure(counts, CONFIG))


def test_episode_distribution_all_suppressed():
    counts = _counts({"control": [0, 1, 2], "intervention": [0, 0, 4]})
    dist = figures.episode_distribution(counts, CONFIG)
    assert list(dist.drop_duplicates("order")["category"]) == ["0", "1+"]
    assert dist["n"].isna().all() and set(dist["text"]) <= {"<5", "[s]"}
    fig = figures.episode_count_figure(counts, CONFIG)
    assert not [p for p in fig.axes[0].patches if p.get_height() > 0]
    assert figures.png_bytes(fig).startswith(b"\x89PNG")
    empty = _counts({"control": [], "intervention": []}).reindex(columns=["arm", "n_episodes"])
    assert figures.png_bytes(figures.episode_count_figure(empty, CONFIG)).startswith(b"\x89PNG")


# ------------------------------------------------------------------------------ forest


def _forest_rows(specs) -> pd.DataFrame:
    rows = []
    for model, title, group, ratio, lo, hi, conv in specs:
        rows.append(
            {
                "model": model,
                "title": title,
                "measure": "rate ratio",
                "adjusted": model.endswith("_adjusted"),
                "ratio": ratio,
                "conf_low": lo,
                "conf_high": hi,
                "converged": conv,
                "message": "" if conv else "monotone likelihood: the coefficient diverges",
                "group": group,
            }
        )
    return pd.DataFrame(rows)


CLAIMS = pd.DataFrame(
    [
        {"claim_id": "c68", "model": "nb", "metric": "rate_reduction", "claimed": 0.68,
         "primary": True},
        {"claim_id": "c50", "model": "ag", "metric": "hazard_reduction", "claimed": 0.5,
         "primary": False},
        {"claim_id": "pain", "model": "pain", "metric": "pain_reduction", "claimed": 0.8,
         "primary": False},
    ]
)  # fmt: skip


def test_forest_groups_claims_primary_and_bad_estimates():
    rows = _forest_rows(
        [
            ("pwp", "PWP total time", "conditional", 0.4, 0.3, 0.55, True),
            ("nb", "Negative binomial rate model", "marginal rate", 0.3, 0.2, 0.45, True),
            ("ag", "Andersen-Gill", "marginal rate", 1.7e-9, 1e-10, 3e-8, True),
            ("cox", "Cox, first episode", "first-episode hazard", np.nan, np.nan, np.nan, False),
            ("zinb", "ZINB", "marginal rate", 0.35, 0.0, np.inf, True),
            ("odd", "A model with no group $x$", "", np.inf, 1.0, np.inf, True),
        ]
    )
    layout = figures.forest_layout(rows, claims=CLAIMS)
    lines = layout["lines"]
    kinds = [(ln["kind"], ln.get("model", ln.get("text"))) for ln in lines]
    assert kinds == [
        ("group", "Marginal rate or mean"),
        ("model", "nb"),
        ("model", "ag"),
        ("model", "zinb"),
        ("group", "First-event hazard"),
        ("model", "cox"),
        ("group", "Conditional (given history or frailty)"),
        ("model", "pwp"),
        ("group", "Other"),
        ("model", "odd"),
    ]
    by = {ln["model"]: ln for ln in lines if ln["kind"] == "model"}
    assert by["nb"]["primary"] and not by["ag"]["primary"]
    assert "primary analysis" in by["nb"]["small"]
    assert by["ag"]["status"] == "off scale" and "1.7e-09" in by["ag"]["text"]
    assert by["cox"]["status"] == "not estimable" and "monotone" in by["cox"]["text"]
    assert by["odd"]["status"] == "not estimable"
    assert by["zinb"]["status"] == "point" and by["zinb"]["text"] == "0.35 (0.00–inf)"
    # claimed effects: 1 - 0.68 and 1 - 0.5 (the pain claim's model is not in the forest)
    assert [v for v, _ in layout["claimed"]] == [0.32, 0.5]
    lo, hi = layout["limits"]
    assert figures.AXIS_MIN <= lo < 0.2 and 1.0 < hi <= figures.AXIS_MAX
    fig = figures.forest_figure(rows, claims=CLAIMS)
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((lo, hi))
    drawn = _texts(fig)
    assert any(t.startswith("claimed 0.32 (c68)") for t in drawn)
    assert r"A model with no group \$x\$" in drawn  # $ escaped: never mathtext
    _deterministic(lambda: figures.forest_figure(rows, claims=CLAIMS))


def test_forest_every_model_failed_or_none():
    rows = _forest_rows(
        [
            ("ag", "Andersen-Gill", "marginal rate", np.nan, np.nan, np.nan, False),
            ("nb", "NB", "marginal rate", -np.inf, np.nan, 0.0, True),
        ]
    )
    layout = figures.forest_layout(rows, claims=CLAIMS)
    assert {ln["status"] for ln in layout["lines"] if ln["kind"] == "model"} == {"not estimable"}
    assert layout["limits"][0] < 1.0 < layout["limits"][1]
    assert figures.png_bytes(figures.forest_figure(rows, claims=CLAIMS)).startswith(b"\x89PNG")
    empty = rows.iloc[0:0]
    assert figures.png_bytes(figures.forest_figure(empty)).startswith(b"\x89PNG")


def test_forest_groups_from_model_descriptions():
    """Without a group column, each model's group comes from its own description."""
    config = {
        **CONFIG,
        "covariates": {},
        "adjust_for": [],
        "models": [
            {"name": "ag", "kind": "andersen_gill"},
            {"name": "cox1", "kind": "cox"},
            {"name": "nb", "kind": "negbin"},
        ],
    }
    rows = _forest_rows(
        [
            ("cox1", "Cox", "", 0.5, 0.4, 0.6, True),
            ("ag", "AG", "", 0.5, 0.4, 0.6, True),
            ("nb", "NB", "", 0.5, 0.4, 0.6, True),
        ]
    ).drop(columns="group")
    lines = figures.forest_layout(rows, config)["lines"]
    assert [ln.get("model", ln.get("text")) for ln in lines] == [
        "Marginal rate or mean",
        "ag",
        "nb",
        "First-event hazard",
        "cox1",
    ]


# ------------------------------------------------------------------------------ MCF


def _mcf(arm: str, times, n_risk, step=0.2) -> pd.DataFrame:
    m = step * np.arange(1, len(times) + 1)
    return pd.DataFrame(
        {
            "arm": arm,
            "time": times,
            "n_risk": n_risk,
            "n_event": 1,
            "mcf": m,
            "std_err": 0.05,
            "conf_low": m - 0.1,
            "conf_high": m + 0.1,
        }
    )


def test_mcf_cut_where_few_at_risk_and_marginal_mean_beside():
    mcf = pd.concat(
        [_mcf("control", [10, 20, 30, 40], [30, 12, 5, 3]), _mcf("intervention", [15], [25])]
    )
    assert figures.mcf_cutoffs(mcf, CONFIG) == {"control": 30.0, "intervention": 15.0}
    fig = figures.mcf_figure(mcf, CONFIG)
    (ax,) = fig.axes
    control = [ln for ln in ax.get_lines() if ln.get_label() == "control"][0]
    assert max(control.get_xdata()) == 30  # the step at day 40 (3 at risk) is not drawn
    marginal = pd.DataFrame(
        {
            "arm": ["control"] * 4 + ["intervention"],
            "time": [10, 20, 30, 40, 15],
            "mean": [0.2, 0.35, 0.5, 0.6, 0.0],
            "std_err": 0.05,
            # a zero mean has no log-scale interval (ghosh_lin.marginal_mean_table: NaN)
            "conf_low": [0.1, 0.25, 0.4, 0.5, np.nan],
            "conf_high": [0.3, 0.45, 0.6, 0.7, np.nan],
        }
    )
    fig = figures.mcf_figure(mcf, CONFIG, marginal=marginal)
    left, right = fig.axes
    assert "Ghosh-Lin" in right.get_title() and "terminal" in right.get_title()
    lines = [ln for ln in right.get_lines() if ln.get_label() == "control"]
    assert max(lines[0].get_xdata()) == 30
    _deterministic(lambda: figures.mcf_figure(mcf, CONFIG, marginal=marginal))


def test_mcf_arm_without_events_and_hostile_label():
    config = {**CONFIG, "arms": {"control": "control", "intervention": HOSTILE_ARM}}
    mcf = _mcf("control", [10, 20], [20, 18])
    fig = figures.mcf_figure(mcf, config)
    assert figures.png_bytes(fig).startswith(b"\x89PNG")
    counts = _counts({"control": [0, 1, 2] * 4, HOSTILE_ARM: [0] * 12})
    fig = figures.episode_count_figure(counts, config)
    assert HOSTILE_ARM.replace("$", r"\$") in _texts(fig)
    _deterministic(lambda: figures.episode_count_figure(counts, config))


def test_png_bytes_same_in_a_fresh_process():
    """Same bytes from another interpreter (no state, font cache or time leaks in)."""
    code = textwrap.dedent(
        """
        import sys
        import pandas as pd
        from recurstudy.report import figures
        counts = pd.DataFrame({"arm": ["control"] * 12 + ["intervention"] * 12,
                               "n_episodes": [0, 1, 2, 3] * 6})
        config = {"arms": {"control": "control", "intervention": "intervention"}}
        sys.stdout.buffer.write(figures.png_bytes(figures.episode_count_figure(counts, config)))
        """
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
        for _ in range(2)
    ]
    counts = pd.DataFrame(
        {"arm": ["control"] * 12 + ["intervention"] * 12, "n_episodes": [0, 1, 2, 3] * 6}
    )
    here = figures.png_bytes(figures.episode_count_figure(counts, {"arms": ARMS}))
    assert runs[0] == runs[1] == here


def test_no_tex_even_when_rcparams_ask_for_it():
    import matplotlib

    rows = _forest_rows([("nb", "NB $50 \\$ {x}", "marginal rate", 0.5, 0.4, 0.6, True)])
    with matplotlib.rc_context({"text.usetex": True}):
        fig = figures.forest_figure(rows)
        png = figures.png_bytes(fig)  # would need a TeX installation if usetex stayed on
    assert png.startswith(b"\x89PNG")
