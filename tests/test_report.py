"""The report: disclosure control (primary and secondary suppression), the tables, the methods
text, offline rendering, deterministic bytes, and no identifier or date of the demo cohort in
anything the report writes.

The `demo_report` fixture (session scope, in conftest.py, shared by every test file) runs the
whole workflow once on the demo cohort into a temporary run directory, with a small power run.
"""

import math
import re
import shutil
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_workflow
from scipy import stats

from recurstudy.config import load_config, study_text
from recurstudy.models import get_model
from recurstudy.rates import rate_summary
from recurstudy.report import disclosure, figures, render, tables, text
from recurstudy.report.disclosure import SUPPRESSED

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
CONFIG = {
    "arms": {"control": "control", "intervention": "intervention"},
    "covariates": {"age": "numeric", "sex": "categorical"},
    "adjust_for": ["age"],
    "min_cell": 5,
    "models": [
        {"name": "km", "kind": "kaplan_meier"},
        {"name": "ag", "kind": "andersen_gill"},
        {"name": "nb", "kind": "negbin"},
    ],
}


_RUNS: dict[str, Path] = {}


HOSTILE = "<script>alert(1)</script> ![x](data/participants.csv)"
STUDY_TITLE = f"Exacerbation trial {HOSTILE}"
HOSTILE_ARM = f"re-education {HOSTILE}"
# The custom study's other texts from the data, through the whole workflow: the control arm's
# label (quoted and unquoted event handlers, a javascript: link, a Markdown image of the cohort
# file), a category of a covariate, and the study's own end-reason label.
HOSTILE_CONTROL = (
    'usual care " onerror="window.__rs_pwned=11" x onerror=window.__rs_pwned=12 '
    '<a href="javascript:window.__rs_pwned=13">j</a> ![c](cohort/participants.csv)'
)
HOSTILE_LEVEL = "F <img src=x onerror=window.__rs_pwned=14> ![c](cohort/participants.csv)"
HOSTILE_END_REASON = "<i onclick=window.__rs_pwned=15>left</i> ![c](cohort/participants.csv)"


def docs_example_code() -> str:
    """The worked example module of docs/extending.md, as written there."""
    text = (REPO / "docs/extending.md").read_text()
    return re.search(r"quasipoisson.py`:\n\n```python\n(.*?)```", text, re.S).group(1)


@pytest.fixture(scope="session")
def custom_study(tmp_path_factory) -> Path:
    """A study unlike the demo, run through the whole workflow: its event is "exacerbation", its
    title, arm labels, a sex category and its end-reason label for withdrawal are full of HTML
    and Markdown, its sites are inst1..inst11, and
    the docs' worked-example model (quasi-Poisson) is added as one module to a copy of the
    package, with one config entry and a claim reading it; nothing else is edited."""
    if "custom" in _RUNS:
        return _RUNS["custom"]
    run = tmp_path_factory.mktemp("custom_run")
    code = run / "code"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", code / "src", ignore=ignore)
    shutil.copytree(REPO / "config", code / "config", ignore=ignore)  # the schema, beside src
    (code / "src/recurstudy/models/quasipoisson.py").write_text(docs_example_code())
    cohort = run / "cohort"
    cohort.mkdir()
    people = pd.read_csv(REPO / "data/demo/participants.csv", dtype=str)
    people["arm"] = people["arm"].replace({"intervention": HOSTILE_ARM, "control": HOSTILE_CONTROL})
    people["sex"] = people["sex"].replace({"F": HOSTILE_LEVEL})
    people["end_reason"] = people["end_reason"].replace({"withdrawn": HOSTILE_END_REASON})
    sites = {"site_A": "inst1", "site_B": "inst2", "site_C": "inst10", "site_D": "inst11"}
    people["site"] = people["site"].map(sites)
    people.to_csv(cohort / "participants.csv", index=False)
    shutil.copy(REPO / "data/demo/episodes.csv", cohort / "episodes.csv")
    config = {
        "study": {
            "title": STUDY_TITLE,
            "event": "exacerbation",
            "labels": {"age": {"label": "Age", "unit": "years"}},
        },
        "data": {"participants": "cohort/participants.csv", "episodes": "cohort/episodes.csv"},
        "arms": {"control": HOSTILE_CONTROL, "intervention": HOSTILE_ARM},
        "covariates": {"age": "numeric", "sex": "categorical"},
        "adjust_for": ["age"],
        "end_reason_labels": {HOSTILE_END_REASON: "withdrawn"},
        "models": [
            {"name": "km_first", "kind": "kaplan_meier"},
            {"name": "negbin_rate", "kind": "negbin"},
            {"name": "quasipoisson_rate", "kind": "quasipoisson"},
        ],
        "claims": [
            {
                "id": "fewer_exacerbations",
                "statement": "Re-education halves exacerbations.",
                "metric": "rate_reduction",
                "claimed": 0.5,
                "model": "quasipoisson_rate",
            }
        ],
        "power": {
            "replicates": 10,
            "chunk_size": 10,
            "seed": 7,
            "alpha": 0.05,
            "mde_grid": [0.2, 0.4, 0.6],
            "grid_replicates": 10,
        },
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_workflow(run, env={"PYTHONPATH": str(code / "src")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    _RUNS["custom"] = run
    return run


# ------------------------------------------------------------------ disclosure control units


def test_fmt_count():
    assert disclosure.fmt_count(4, 5) == "<5"
    assert disclosure.fmt_count(5, 5) == "5"
    assert disclosure.fmt_count(0, 5) == "<5"
    assert disclosure.fmt_count(0, 5, suppress_zero=False) == "0"
    assert disclosure.fmt_count(7, 10) == "<10"


def _recoverable(values, groups, hidden):
    """Groups with exactly one hidden cell (that cell = total minus the others)."""
    return [g for g in groups if sum(c in hidden for c in g) == 1]


def test_secondary_suppression_rows_and_columns():
    # Two arms and a total, three categories; control has 3 in category "b".
    counts = {"a": (20, 12), "b": (3, 9), "c": (7, 14)}
    values, groups = {}, []
    for lev, (x, y) in counts.items():
        values.update({(lev, "x"): x, (lev, "y"): y, (lev, "t"): x + y})
        groups.append([(lev, "x"), (lev, "y"), (lev, "t")])
    for col in ("x", "y", "t"):
        groups.append([(lev, col) for lev in counts])  # their sum (the arm's N) is shown
    primary, secondary = disclosure.suppress(values, groups, 5)
    assert primary == {("b", "x")}
    assert secondary  # the lone small cell is protected
    assert not _recoverable(values, groups, primary | secondary)
    # the smallest other cell of its column and of its row go first
    assert ("c", "x") in secondary and ("b", "y") in secondary


def test_no_suppression_when_all_large():
    values = {("a", "x"): 10, ("a", "y"): 11}
    assert disclosure.suppress(values, [list(values)], 5) == (set(), set())


def _participants(n_c=20, n_i=20, f_c=3, f_i=10, seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for arm, n, f in (("control", n_c, f_c), ("intervention", n_i, f_i)):
        for k in range(n):
            rows.append(
                {
                    "participant_id": f"X{arm[0]}{k:03d}",
                    "arm": arm,
                    "age": float(rng.integers(18, 60)),
                    "sex": "F" if k < f else "M",
                    "site": "s1" if k % 2 else "s2",
                    "end_reason": "completed",
                    "enrolled_on": pd.Timestamp("2025-01-01"),
                    "followup_end": pd.Timestamp("2025-07-01"),
                }
            )
    return pd.DataFrame(rows)


def test_table1_primary_and_secondary_suppression():
    t = tables.table1(_participants(), CONFIG)
    hdr = [c for c in t.columns if c.startswith(("control", "intervention", "Overall"))]
    assert hdr == ["control (N=20)", "intervention (N=20)", "Overall (N=40)"]
    sex = t[t["level"].isin(["F", "M"])].set_index("level")
    assert sex.loc["F", "control (N=20)"] == "<5"
    # control F = 3 would follow from N=20 - M and from Overall F - intervention F:
    assert sex.loc["M", "control (N=20)"] == SUPPRESSED
    row_hidden = [sex.loc["F", c] in ("<5", SUPPRESSED) for c in hdr]
    assert sum(row_hidden) >= 2
    for c in hdr:  # every column: zero or at least two hidden cells
        assert sum(sex.loc[lev, c] in ("<5", SUPPRESSED) for lev in ("F", "M")) != 1
    assert t.loc[t["characteristic"].str.startswith("age"), "control (N=20)"].iloc[0].count("(")
    # nothing below 5 is shown as a number
    for cell in t[hdr].to_numpy().ravel():
        m = re.match(r"^(\d+) \(", cell)
        assert not m or int(m.group(1)) >= 5


def test_table1_small_arm_and_zero_cells():
    t = tables.table1(_participants(n_c=4, f_c=0), CONFIG)
    assert "control (N=<5)" in t.columns
    col = t["control (N=<5)"]
    assert all(v in ("", "<5", SUPPRESSED, "n<5") for v in col)
    # zero women in intervention is suppressed as well (attribute disclosure)
    t2 = tables.table1(_participants(f_i=0), CONFIG)
    f = t2[t2["level"] == "F"].iloc[0]
    assert f["intervention (N=20)"] == "<5"


def _hand_counts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "participant_id": [f"P{i}" for i in range(6)],
            "arm": ["control"] * 3 + ["intervention"] * 3,
            "n_episodes": [0, 2, 4, 1, 1, 1],
            "exposure_days": [100.0, 100.0, 200.0, 100.0, 200.0, 100.0],
        }
    )


def test_rate_summary_by_hand():
    """Per-arm rates, ratio and difference against a hand calculation of the HC0 sandwich."""
    r = rate_summary(_hand_counts(), CONFIG).set_index(["quantity", "arm", "unit"])
    # control: 6 events over 400 days; residuals y - r t = -1.5, 0.5, 1.0 (sum of squares 3.5)
    r0, se0 = 6 / 400, math.sqrt(3.5) / 6
    # intervention: 3 events over 400 days; residuals 0.25, -0.5, 0.25 (sum of squares 0.375)
    r1, se1 = 3 / 400, math.sqrt(0.375) / 3
    z = stats.norm.ppf(0.975)
    month = r.loc[("rate", "control", "per 100 participant-months")]
    assert month["estimate"] == pytest.approx(r0 * 100 * 365.25 / 12, rel=1e-12)
    assert month["conf_low"] == pytest.approx(month["estimate"] * math.exp(-z * se0), rel=1e-12)
    assert month["events"] == 6 and month["participants"] == 3
    year = r.loc[("rate", "intervention", "per participant-year")]
    assert year["estimate"] == pytest.approx(r1 * 365.25, rel=1e-12)
    assert year["conf_high"] == pytest.approx(r1 * 365.25 * math.exp(z * se1), rel=1e-12)
    rr = r.xs("rate_ratio", level="quantity").iloc[0]
    assert rr["estimate"] == pytest.approx(0.5, rel=1e-12)
    assert rr["std_error"] == pytest.approx(math.hypot(se0, se1), rel=1e-12)
    rd = r.xs("rate_difference", level="quantity").iloc[0]
    per = 100 * 365.25
    assert rd["estimate"] == pytest.approx((r1 - r0) * per, rel=1e-12)  # -273.94 per 100 p-y
    sd = per / 400 * math.sqrt(3.5 + 0.375)  # delta method: Var(r) = sum(y - r t)^2 / T^2
    assert rd["std_error"] == pytest.approx(sd, rel=1e-12)
    assert rd["conf_low"] == pytest.approx((r1 - r0) * per - z * sd, rel=1e-12)


def test_rate_ratio_equals_poisson_model_with_hc0():
    """The rate ratio and its SE are those of the poisson model (HC0 sandwich), an independent
    code path (statsmodels GLM), on overdispersed simulated data."""
    rng = np.random.default_rng(3)
    n = 400
    arm = np.repeat(["control", "intervention"], n // 2)
    t = rng.integers(30, 365, n).astype(float)
    mu = t * np.where(arm == "control", 0.02, 0.012) * rng.gamma(2.0, 0.5, n)
    counts = pd.DataFrame(
        {"participant_id": [f"P{i}" for i in range(n)], "arm": arm, "n_episodes": rng.poisson(mu),
         "exposure_days": t}
    )  # fmt: skip
    from recurstudy.models import ModelSpec

    fit = get_model("poisson").fit(ModelSpec("p", "poisson"), counts=counts)
    row = fit.table.set_index("term").loc["arm[T.intervention]"]
    rr = rate_summary(counts, CONFIG).set_index("quantity").loc["rate_ratio"]
    assert bool(row["robust"])
    assert rr["estimate"] == pytest.approx(row["exp_estimate"], rel=1e-6)
    assert rr["std_error"] == pytest.approx(row["std_error"], rel=1e-6)


def test_rate_summary_no_events_in_an_arm():
    counts = _hand_counts()
    counts.loc[counts["arm"] == "intervention", "n_episodes"] = 0
    r = rate_summary(counts, CONFIG).set_index("quantity")
    assert np.isnan(r.loc["rate_ratio", "conf_low"]) and np.isnan(
        r.loc["rate_difference", "conf_low"]
    )
    md = _visible(text.rates_sentences(r.reset_index(), CONFIG))
    assert "not estimable" in md


def test_rates_table_and_first_screen():
    counts = pd.DataFrame(
        {
            "arm": ["control"] * 10 + ["intervention"] * 10,
            "n_episodes": [3] * 10 + [1] * 10,
            "exposure_days": [tables.DAYS_PER_MONTH * 10] * 20,  # 10 participant-months each
        }
    )
    rates = rate_summary(counts, CONFIG)
    t = tables.rates_table(rates, CONFIG).set_index("")
    assert t.loc["control", "episodes"] == "30"
    assert t.loc["control", "participant-months"] == "100"
    # 30 events in 100 participant-months; every participant has y - r t = 0: SE 0
    assert t.loc["control", "per 100 participant-months (95% CI)"] == "30.0 (30.0–30.0)"
    assert t.loc["intervention", "per participant-year (95% CI)"].startswith("1.20")
    assert t.loc["rate ratio, intervention vs control", "per 100 participant-months (95% CI)"] == (
        "0.33 (0.33–0.33)"
    )
    claims = pd.DataFrame(
        [
            {"claim_id": "c1", "statement": "cut episodes by half", "model": "nb", "primary": True,
             "claimed": 0.5, "estimate": 0.6, "conf_low": 0.4, "conf_high": 0.7,
             "verdict": "supported", "reason": "the 90% interval lies within"}
        ]
    )  # fmt: skip
    agreement = pd.DataFrame(
        {"claim_id": ["c1", "c1"], "model": ["ag", "ag_adjusted"], "agrees": [True, False],
         "title": ["Andersen-Gill (all episodes)"] * 2}
    )  # fmt: skip
    strategy = text.intercurrent_sentence(
        {"intercurrent_strategy": "death (terminal event): while alive (the model's rate)"}
    )
    md = text.first_screen(claims, rates, CONFIG, agreement=agreement, strategies={"c1": strategy})
    seen = _visible(md)
    # escaped once, for Markdown: the reader sees the text, no backslash or entity
    assert "death (terminal event): while alive (the model's rate)." in seen
    assert "Primary claim (c1)" in seen and "reduced by 50%" in seen
    assert "60% reduction (95% CI 40% to 70%)" in seen
    assert "Verdict: supported, because the 90% interval lies within" in seen
    assert "1 of 2 sensitivity models agree" in seen
    assert "not: Andersen-Gill (all episodes), adjusted." in seen
    assert "30.0 per 100 participant-months" in seen and "per participant-year" in seen
    assert "Rate ratio, intervention vs control: 0.33" in seen
    assert "240.0 episodes prevented per 100 participant-years" in seen  # (3.6-1.2)*100
    assert "Not pre-specified" in seen


def _flow(excluded_c=2, excluded_i=7):
    return {
        "arms": {"control": "control", "intervention": "intervention"},
        "participants": {
            "received": 160 + excluded_c + excluded_i,
            "received_by_arm": {
                "control": 80 + excluded_c,
                "intervention": 80 + excluded_i,
                "other": 0,
            },
            "excluded": excluded_c + excluded_i,
            "excluded_by_arm": {"control": excluded_c, "intervention": excluded_i, "other": 0},
            "excluded_by_reason": {"episodes.severity: in_range": excluded_c + excluded_i},
            "analysed": 160,
            "analysed_by_arm": {"control": 80, "intervention": 80, "other": 0},
        },
        "episodes": {"received": 500, "excluded": 3, "analysed": 497},
    }


def test_flow_table():
    t = tables.flow_table(_flow(0, 0)).set_index("stage")
    assert t.loc["Excluded by validation", "control"] == "0"  # a structural zero is shown
    assert t.loc["Analysed", "Total"] == "160"
    t = tables.flow_table(_flow(2, 7)).set_index("stage")
    assert t.loc["Excluded by validation", "control"] == "<5"
    assert t.loc["Analysed", "control"] == "80"  # analysed counts are kept visible
    # control's 2 would follow from received - analysed: received is hidden instead
    assert t.loc["Received", "control"] == SUPPRESSED
    hidden = {(s, c) for s in t.index for c in t.columns if t.loc[s, c] in ("<5", SUPPRESSED)}
    cols = ["control", "intervention", "Total"]
    stages = ["Received", "Excluded by validation", "Analysed"]
    groups = [[(s, c) for s in stages] for c in cols] + [[(s, c) for c in cols] for s in stages]
    assert not _recoverable(None, groups, hidden)
    rec = tables.record_flow_table(_flow()).set_index("table")
    assert rec.loc["Episodes", "excluded"] == "<5"


def _visible(markdown: str) -> str:
    """What a reader sees of a Markdown text (rendered as the report renders it, tags removed)."""
    import html

    from nbconvert.filters.markdown import markdown2html

    return html.unescape(re.sub(r"<[^>]+>", "", markdown2html(markdown)))


def test_methods_paragraph_from_config():
    est = pd.DataFrame({"model": ["km", "ag", "nb"], "robust": [False, True, False]})
    md = text.methods_paragraph(
        {**CONFIG, "claims": [{"id": "c"}], "power": {"replicates": 99, "seed": 7}},
        est,
        {"python": "3.11.7", "lifelines": "0.30.3"},
    )
    seen = _visible(md)
    # every model is listed with its own description: title, estimand, R call, reference
    for kind in ("kaplan_meier", "andersen_gill", "negbin"):
        d = get_model(kind).describe()
        for piece in (d.title, d.estimand, d.r_call, d.reference):
            assert piece and " ".join(piece.split()) in seen, (kind, piece)
    assert "ag: formula ~ arm, ag_adjusted: formula ~ arm + age" in seen
    assert "Variance: robust (sandwich), clustered on participant" in seen  # ag: robust
    assert "Variance: model-based (inverse information)" in seen  # nb
    assert "Risk set and exposure: each analysed participant at risk from enrolment" in seen
    assert "over their time at risk" in seen  # the count model's exposure
    assert "Interval: Wald 95% on the log-ratio scale, exponentiated" in seen
    assert "hazard ratios and rate ratios" in seen  # the measures the models declare
    assert "99 simulated replicates" in seen and "seed 7" in seen
    assert "fewer than 5 participants" in seen
    assert "lifelines 0.30.3" in seen
    assert md.count("\n- ") == 3  # one item per model, its adjusted variant in the same item


def test_forest_keeps_failed_models():
    est = pd.DataFrame(
        [
            {
                "model": "ag",
                "term": "arm[T.intervention]",
                "exp_estimate": 0.3,
                "exp_conf_low": 0.2,
                "exp_conf_high": 0.4,
                "converged": True,
                "message": "",
            },
            {
                "model": "nb",
                "term": "arm[T.intervention]",
                "exp_estimate": np.nan,
                "exp_conf_low": np.nan,
                "exp_conf_high": np.nan,
                "converged": False,
                "message": "failed: singular matrix",
            },
        ]
    )
    rows = tables.forest_data(est, CONFIG)
    assert list(rows["model"]) == ["ag", "nb"]
    assert list(rows["title"]) == [
        get_model(k).describe().title for k in ("andersen_gill", "negbin")
    ]
    assert list(rows["measure"]) == ["hazard ratio", "rate ratio"]
    assert not rows.set_index("model").loc["nb", "converged"]
    assert "singular" in rows.set_index("model").loc["nb", "message"]
    png = figures.png_bytes(figures.forest_figure(rows))
    assert png.startswith(b"\x89PNG") and png == figures.png_bytes(figures.forest_figure(rows))
    assert b"Software" not in png and b"matplotlib" not in png.lower()


def test_report_has_no_table_of_kinds():
    """The report reads models through their descriptions: no list of kinds, no kind branch."""
    package = REPO / "src/recurstudy/report"
    for path in sorted(package.glob("*.py")):
        source = path.read_text()
        assert not re.search(r"\bkind\s*[!=]=|\bkind\s+in\b|KIND_TEXT|RATIO_KINDS", source), path


class _Demo:
    """Two model kinds registered for one test: a ratio model with extra tables in every
    section, and a descriptive model (no effect measure) that writes a survival table."""

    def __enter__(self):
        from recurstudy.models.base import REGISTRY, ExtraTable, Model, failed, register

        class OddsDemo(Model):
            kind = "odds_demo"
            datasets = ("counts",)
            title = "Odds demo model"
            effect_measure = "odds ratio"
            estimand = "odds of any event, intervention vs control"
            extras = (
                ExtraTable("calibration", "Calibration of the demo"),
                ExtraTable("more", "More about the demo", "appendix"),
                ExtraTable("secret", "Never shown", "hidden"),
            )

            def fit(self, spec, **data):
                return failed(spec, "not fitted")

        class DescribeDemo(Model):
            kind = "describe_demo"
            datasets = ("first_episode",)
            adjustable = False
            title = "Descriptive demo"
            estimand = "curves by arm"

            def fit(self, spec, **data):
                return failed(spec, "not fitted")

        self.registry = REGISTRY
        register(OddsDemo)
        register(DescribeDemo)
        return {
            "arms": {"control": "control", "intervention": "intervention"},
            "covariates": {"age": "numeric"},
            "adjust_for": ["age"],
            "min_cell": 5,
            "models": [
                {"name": "odds", "kind": "odds_demo"},
                {"name": "curves", "kind": "describe_demo"},
            ],
        }

    def __exit__(self, *exc):
        self.registry.pop("odds_demo", None)
        self.registry.pop("describe_demo", None)


def _tidy_row(model, ratio, converged=True, message=""):
    nan = float("nan")
    return {
        "model": model,
        "term": "arm[T.intervention]",
        "exp_estimate": ratio if converged else nan,
        "exp_conf_low": ratio / 2 if converged else nan,
        "exp_conf_high": ratio * 2 if converged else nan,
        "converged": converged,
        "message": message,
    }


def test_model_description_drives_forest_and_sections(tmp_path):
    with _Demo() as config:
        entries = tables.model_entries(config)
        assert [e.name for e in entries] == ["odds", "odds_adjusted", "curves"]
        est = pd.DataFrame(
            [
                _tidy_row("odds", 0.5),
                _tidy_row("odds_adjusted", 0.0, converged=False, message="separation"),
                _tidy_row("curves", 0.9),
            ]
        )
        rows = tables.forest_data(est, config, entries=entries).set_index("model")
        assert list(rows.index) == ["odds", "odds_adjusted"]  # "curves" has no effect measure
        assert set(rows["title"]) == {"Odds demo model"}
        assert set(rows["measure"]) == {"odds ratio"}
        assert rows.loc["odds_adjusted", "adjusted"] and not rows.loc["odds_adjusted", "converged"]
        assert tables.effect_measures(entries) == ["odds ratio"]

        models = tmp_path / "models"
        for name in ("odds", "odds_adjusted"):
            (models / name).mkdir(parents=True)
            pd.DataFrame(
                {"arm": ["control", "intervention"], "n": [3, 12], "n_dropped": [0, 0],
                 "events": [0, 9], "brier": [0.123456, 0.2]}
            ).to_csv(models / name / "calibration.csv", index=False)  # fmt: skip
            pd.DataFrame({"x": [1]}).to_csv(models / name / "secret.csv", index=False)
        (models / "odds" / "more.csv").write_text("y\n2\n")
        (models / "curves").mkdir()
        (models / "curves" / "survival.csv").write_text("arm,time\ncontrol,1\n")

        diag = tables.section_extras(models, entries, "diagnostics", 5)
        assert [c for c, _ in diag] == ["Odds demo model: Calibration of the demo"]
        cal = diag[0][1]
        assert list(cal["model"]) == ["odds", "odds", "odds_adjusted", "odds_adjusted"]
        # a count below min_cell is suppressed, and the other row of the column too (with the
        # model's total participants, printed elsewhere, it would give the first back)
        assert list(cal["n"]) == ["<5", SUPPRESSED] * 2
        assert list(cal["events"]) == ["<5", SUPPRESSED] * 2  # ... a zero as well
        assert list(cal["n_dropped"]) == ["0", "0"] * 2  # nobody dropped identifies nobody
        assert list(cal["brier"]) == ["0.123", "0.200"] * 2
        appendix = tables.section_extras(models, entries, "appendix", 5)
        assert [c for c, _ in appendix] == ["Odds demo model: More about the demo"]
        shown = [c for c, _ in diag + appendix]
        assert not any("Never shown" in c for c in shown)  # hidden extras stay out
        assert [e.name for e in tables.models_with_file(models, entries, "survival")] == ["curves"]
        md = _visible(text.methods_paragraph(config, entries=entries))
        assert "Odds demo model" in md and "Descriptive demo" in md
        assert "odds of any event, intervention vs control" in md
        assert "odds ratios of intervention vs control" in md


def test_table1_labels_and_natural_order():
    p = _participants()
    p["site"] = ["inst10", "inst2", "inst1", "inst11"] * 10
    config = {
        **CONFIG,
        "study": {"labels": {"age": {"label": "Age at entry", "unit": "years"}, "sex": {}}},
    }
    t = tables.table1(p, config)
    chars = [c for c in t["characteristic"] if c]
    assert chars[:3] == ["Site", "Age at entry (years), mean (SD)", "sex"]
    site = t["level"].iloc[1:5].tolist()
    assert site == ["inst1", "inst2", "inst10", "inst11"]
    # or in the order the config gives (the rest after, in natural order)
    config["study"]["labels"]["site"] = {"label": "Centre", "levels": ["inst11", "inst2"]}
    t = tables.table1(p, config)
    assert t["characteristic"].iloc[0] == "Centre"
    assert t["level"].iloc[1:5].tolist() == ["inst11", "inst2", "inst1", "inst10"]


EXACERBATION = {
    **CONFIG,
    "study": {"title": "Asthma trial", "event": "exacerbation", "labels": {}},
}


def test_study_words_everywhere():
    counts = pd.DataFrame(
        {
            "arm": ["control", "intervention"] * 10,
            "n_episodes": [2, 1] * 10,
            "exposure_days": [300.0] * 20,
        }
    )
    rates = tables.rates_table(rate_summary(counts, EXACERBATION), EXACERBATION)
    assert "exacerbations" in rates.columns
    assert "exacerbations" in _visible(
        text.rates_sentences(rate_summary(counts, EXACERBATION), EXACERBATION)
    )
    assert text.rates_caption(EXACERBATION).startswith("Exacerbations and time at risk")
    survival = pd.DataFrame(
        {
            "arm": ["control", "intervention"],
            "time": [10.0, 20.0],
            "n_risk": [10, 10],
            "n_event": [1, 1],
            "n_censor": [0, 0],
            "surv": [0.9, 0.9],
            "conf_low": [0.7, 0.7],
            "conf_high": [1.0, 1.0],
        }
    )
    km = figures.km_figure(survival, EXACERBATION)
    mcf = figures.mcf_figure(survival.assign(mcf=[0.1, 0.1]), EXACERBATION)
    words = [km.axes[0].get_title(), km.axes[0].get_ylabel(), mcf.axes[0].get_title()]
    words += [mcf.axes[0].get_ylabel(), text.km_caption(EXACERBATION, "KM", 5)]
    words += [text.mcf_caption(EXACERBATION, "KM", True)]
    flow = _flow(0, 0)
    claims = pd.DataFrame(columns=["claim_id"])
    words += [_visible(text.summary_paragraph(flow, claims, counts, EXACERBATION))]
    words += [_visible(text.methods_paragraph(EXACERBATION))]
    assert all("exacerbation" in w for w in words), words
    assert not any("pain episode" in w or "first episode" in w.split(";")[0] for w in words[:6])
    assert _visible(text.title_markdown(EXACERBATION)).startswith("Asthma trial")
    assert "Outcome study report" in _visible(text.title_markdown(CONFIG))  # the schema default


def _hostile_config():
    return {
        **CONFIG,
        "arms": {"control": "control", "intervention": f"re-ed {HOSTILE}"},
        "study": {"title": f"Trial {HOSTILE}", "event": "episode", "labels": {}},
        "claims": [{"id": "c1"}],
    }


def _assert_inert(page: str) -> None:
    """No script, no image or link other than data: URIs and in-page anchors."""
    assert "<script" not in page.lower()
    assert not re.search(r"<img\b[^>]*\bsrc=\"(?!data:)", page)
    assert not re.search(r"<a\b[^>]*\bhref=\"(?!#)", page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_text_from_config_is_escaped():
    from nbconvert.filters.markdown import markdown2html

    config = _hostile_config()
    intervention = config["arms"]["intervention"]
    counts = pd.DataFrame(
        {"arm": ["control", intervention] * 10, "n_episodes": 1, "exposure_days": 300.0}
    )
    claims = pd.DataFrame(
        [
            {"claim_id": "c1", "statement": f"cut {HOSTILE}", "model": "nb", "claimed": 0.5,
             "estimate": 0.4, "conf_low": 0.2, "conf_high": 0.6, "verdict": "supported",
             "reason": "r"}
        ]
    )  # fmt: skip
    flow = _flow(0, 0)
    flow["arms"] = config["arms"]
    for md in (
        text.title_markdown(config),
        text.summary_paragraph(flow, claims, counts, config),
        text.first_screen(
            claims,
            rate_summary(counts, config),
            config,
            strategies={
                "c1": text.intercurrent_sentence({"intercurrent_strategy": f"strategy {HOSTILE}"})
            },
        ),
        text.methods_paragraph(config),
    ):
        page = markdown2html(md)
        _assert_inert(page)
        assert HOSTILE in _visible(md)  # shown as the characters it is made of
    people = _participants()
    people["arm"] = people["arm"].replace({"intervention": intervention})
    for df in (
        tables.table1(people, config),
        tables.flow_table(flow),
        tables.rates_table(rate_summary(counts, config), config),
    ):
        _assert_inert(render.table_html(df, f"caption {HOSTILE}", f"note {HOSTILE}"))
    _assert_inert(figures.img_html(b"png", HOSTILE, HOSTILE))
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"text/markdown": text.title_markdown(config)})
    ]
    nb.cells = [cell]
    page = render.render_html(nb, title=study_text(config)["title"])
    _assert_inert(page)
    assert re.search(r"<title>Trial &lt;script&gt;alert\(1\)&lt;/script&gt; !\[x\]", page)


def test_rendered_html_is_offline():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title\n\n$x^2$"),
        nbformat.v4.new_code_cell("print(1)"),
    ]
    page = render.render_html(nb)
    assert "<script" not in page and "print(1)" not in page
    assert not re.search(r"https?://", page)


# ------------------------------------------------------------------ the demo report


def _strip_data_uris(text: str) -> str:
    return re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=\\n]+", "data:", text)


def test_report_outputs(demo_report):
    reports = demo_report / "reports"
    for name in (
        "report.html",
        "report.ipynb",
        "manifest.json",
        "run_info.json",
        "figures/km.png",
        "figures/forest.png",
        "tables/table1.csv",
    ):
        assert (reports / name).is_file(), name
    page = (reports / "report.html").read_text(encoding="utf-8")
    heads = re.findall(r"<h2[^>]*>(.*?)<", page)
    order = [
        "The answer",
        "Participant flow",
        "Baseline",
        "Episode rates",
        "Time to first",
        "mean cumulative",
        "Intervention effect",
        "Model diagnostics",
        "Pain",
        "Power",
        "Methods",
        "Provenance",
        "Statistical appendix",
    ]
    assert len(heads) == len(order)
    for h, key in zip(heads, order, strict=True):
        assert key.lower() in h.lower(), (h, key)
    assert page.count("<img ") >= 4
    assert "<script" not in page and not re.search(r"https?://", page)
    assert "tables.table1" not in page and "show_table(" not in page  # code hidden
    nb = nbformat.read(reports / "report.ipynb", as_version=4)
    assert any("tables.table1" in c.source for c in nb.cells)  # ... but kept in the notebook
    assert str(demo_report) not in (reports / "report.ipynb").read_text()
    assert str(demo_report) not in page
    # every model of the run is in the model table, failed or not
    models = pd.read_csv(reports / "tables/models.csv")
    est = pd.read_csv(demo_report / "results/estimates.csv")
    assert set(models["internal name"]) == set(est["model"])
    # the first screen: each claim's sentence and the rates per arm, from results/rates.csv
    seen = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", _strip_data_uris(page)))
    first = seen[seen.index("The answer") : seen.index("Participant flow")]
    assert "Primary claim (episodes_68)" in first and "Verdict: supported" in first
    assert "per 100 participant-months" in first and "per participant-year" in first
    assert "prevented per 100 participant-years" in first
    assert re.search(r"Source: .*results/rates\.csv SHA-256 [0-9a-f]{64}", first)


def test_report_is_deterministic(demo_report, tmp_path):
    """The notebook re-executed and re-rendered elsewhere gives the workflow's bytes."""
    other = tmp_path / "elsewhere"
    shutil.copytree(demo_report, other, ignore=shutil.ignore_patterns(".snakemake", "reports"))
    config = load_config(other / "config.yaml")
    # the commit the run recorded (HEAD may have moved since, in a shared working tree)
    ran = (demo_report / "reports/report.ipynb").read_text()
    commit = re.search(r"source_commit = '([0-9a-f]+|unknown)'", ran).group(1)
    params = {"config": config, "source_commit": commit, "assets": "reports"}
    nb, _ = render.execute_notebook(REPO / "workflow/notebooks/report.py.ipynb", params, other)
    page = render.render_html(nb, title=study_text(config)["title"])
    assert page == (demo_report / "reports/report.html").read_text(encoding="utf-8")
    for sub in ("figures", "tables"):
        for f in sorted((demo_report / "reports" / sub).iterdir()):
            assert (other / "reports" / sub / f.name).read_bytes() == f.read_bytes(), f.name
    nb_path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(nb_path))
    assert nb_path.read_bytes() == (demo_report / "reports/report.ipynb").read_bytes()


def test_no_identifier_or_date_in_reports(demo_report):
    people = pd.read_csv(REPO / "data/demo/participants.csv", dtype=str)
    ids = set(people["participant_id"])
    dates = set(people["enrolled_on"]) | set(people["followup_end"])
    assert len(ids) == 300
    files = [
        p
        for p in (demo_report / "reports").rglob("*")
        if p.is_file()
        and p.suffix in (".html", ".ipynb", ".csv", ".json")
        and p.name != "run_info.json"
    ]
    assert len(files) >= 8
    pattern = re.compile("|".join(re.escape(x) for x in sorted(ids | dates)))
    for f in files:
        text = _strip_data_uris(f.read_text(encoding="utf-8"))
        hits = pattern.findall(text)
        assert not hits, f"{f.name} shows {sorted(set(hits))[:5]}"
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), f.name  # no date at all


def test_snakemake_report(demo_report, tmp_path):
    out = tmp_path / "snakemake_report.zip"
    proc = run_workflow(demo_report, "--report", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import zipfile

    names = zipfile.ZipFile(out).namelist()
    assert any(n.endswith("km.png") for n in names)
    assert any(n.endswith("table1.csv") for n in names)


def _page_text(page: str) -> str:
    """The text a reader sees on a report page (styles, tags and data: URIs removed)."""
    import html

    page = re.sub(r"<style.*?</style>", "", _strip_data_uris(page), flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_custom_study_words_and_escaping(custom_study):
    reports = custom_study / "reports"
    page = (reports / "report.html").read_text(encoding="utf-8")
    _assert_inert(page)
    escaped = STUDY_TITLE.replace("<", "&lt;").replace(">", "&gt;")
    assert f"<title>{escaped}</title>" in page
    seen = _page_text(page)
    h1 = re.search(r"<h1[^>]*>(.*?)<a class", page, re.S).group(1)
    assert _page_text(h1).strip() == STUDY_TITLE  # the study title, shown as written
    assert HOSTILE_ARM in seen and HOSTILE_CONTROL in seen  # the arm labels, as text
    assert HOSTILE_LEVEL in seen  # a category of the data, as text (Table 1)
    people = pd.read_csv(custom_study / "cohort/participants.csv", dtype=str)
    assert not any(pid in page for pid in people["participant_id"])  # no file embedded
    withdrawn = people["end_reason"] == HOSTILE_END_REASON
    assert withdrawn.sum() > 0 and "window.__rs_pwned=15" not in page  # mapped, never shown
    heads = [_page_text(h).strip() for h in re.findall(r"<h2[^>]*>(.*?)<", page)]
    assert "4. Exacerbation rates" in heads and "5. Time to first exacerbation" in heads
    assert "6. Recurrent exacerbations: mean cumulative function" in heads
    assert "Exacerbations and time at risk by arm" in seen
    assert "Exacerbations and rates by arm" in seen and " exacerbations over " in seen
    assert "exacerbations prevented per 100 participant-years" in seen
    assert "pain episode" not in seen.lower()
    # the notebook's Markdown outputs carry no live link or image syntax either
    nb = nbformat.read(reports / "report.ipynb", as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            md = out.get("data", {}).get("text/markdown", "")
            assert not re.search(r"(?<!\\)\]\(|<script", md), md[:200]
    # Table 1: covariate labels from the config, categories in natural order
    t1 = pd.read_csv(reports / "tables/table1.csv", dtype=str, keep_default_na=False)
    assert "Age (years), mean (SD)" in set(t1["characteristic"])
    start = t1.index[t1["characteristic"] == "Site"][0]
    assert list(t1["level"].iloc[start + 1 : start + 5]) == ["inst1", "inst2", "inst10", "inst11"]


def test_plan_line_states_prespecification():
    from recurstudy import plan

    config = {"claims": [], "models": []}
    assert text.plan_line(plan.status(config, None)) == (
        "**Not pre-specified\\: no plan was locked.**"
    )
    locked = {
        "prespecified": True,
        "sha256": "ab" * 32,
        "statement": "pre-specified: plan locked on 2026-11-30",
    }
    line = text.plan_line(locked)
    assert line.startswith("**Pre-specified\\: plan locked on 2026-11-30** (plan SHA-256 abab")


def test_methods_state_the_verdict_and_multiplicity_rules():
    config = load_config(REPO / "config/config.yaml")
    methods = text.methods_paragraph(config)
    assert "Verdict rule" in methods and "90% interval lies within c ± m" in methods
    assert "*larger than claimed*" in methods and "*contradicted*" in methods
    assert "Holm's step-down correction" in methods
    config["multiplicity"] = "fixed_sequence"
    assert "fixed sequence" in text.methods_paragraph(config)


# ------------------------------------------------------------------ disclosure across tables


def _tiny_cohort():
    """12 participants (6 per arm), one control participant withdrawn at day 20, 3 control and
    9 intervention events: the cohort of issue 12 item 5."""
    flow = {
        "arms": {"control": "control", "intervention": "intervention"},
        "participants": {
            "received": 12,
            "received_by_arm": {"control": 6, "intervention": 6, "other": 0},
            "excluded": 0,
            "excluded_by_arm": {"control": 0, "intervention": 0, "other": 0},
            "excluded_by_reason": {},
            "analysed": 12,
            "analysed_by_arm": {"control": 6, "intervention": 6, "other": 0},
        },
    }
    days = [20, 182, 182, 182, 182, 182] + [182] * 6
    counts = pd.DataFrame(
        {
            "participant_id": [f"T{i:02d}" for i in range(12)],
            "arm": ["control"] * 6 + ["intervention"] * 6,
            "n_episodes": [0, 1, 0, 2, 0, 0] + [1, 2, 1, 2, 1, 2],
            "exposure_days": [float(d) for d in days],
        }
    )
    people = _participants(6, 6)
    people["followup_end"] = people["enrolled_on"] + pd.to_timedelta(days, unit="D")
    people["end_reason"] = ["withdrawn"] + ["completed"] * 11
    return flow, counts, people


def test_tiny_cohort_counts_hidden_in_every_table():
    """On a cohort of 12, the control arm's 3 events are hidden everywhere, and nothing printed
    gives them back by subtraction: not the rates table (other arm and total hidden too), not
    the model table (totals and rate intercepts hidden), not a medians table (both arms hidden),
    not the first screen; the design shows no one person's follow-up or the 1/12 dropout."""
    flow, counts, people = _tiny_cohort()
    cells = disclosure.cohort_cells(flow["participants"], tables.events_by_role(counts, CONFIG), 5)
    assert cells.small
    assert all(cells.hidden(("events", r)) for r in ("control", "intervention", "total"))
    assert cells.text(("analysed", "control")) == "6"  # 6 >= 5: shown, the same everywhere
    rates = rate_summary(counts, CONFIG)
    t = tables.rates_table(rates, CONFIG, cells).set_index("")
    assert t.loc["control", "episodes"] == "<5"
    assert t.loc["intervention", "episodes"] == SUPPRESSED
    for arm in ("control", "intervention"):
        assert t.loc[arm, "participant-months"] == SUPPRESSED
        assert t.loc[arm, "per 100 participant-months (95% CI)"] == SUPPRESSED
    assert t.loc["rate difference per 100 participant-years", "per participant-year (95% CI)"] == (
        SUPPRESSED
    )
    md = _visible(text.rates_sentences(rates, CONFIG, cells))
    assert "<5 episodes" in md and "[s] episodes" in md and "participant-months;" not in md
    assert not re.search(r"\b(3|9|12) episodes", md)
    summary = _visible(
        text.summary_paragraph(
            flow, pd.DataFrame(columns=["claim_id"]), counts, CONFIG, None, cells
        )
    )
    assert "[s] episodes" in summary and "12 episodes" not in summary
    est = pd.DataFrame(
        [
            {"model": "pois", "term": "Intercept", "estimate": np.log(3 / 728), "std_error": 0.5,
             "robust": True, "p_value": 0.1, "exp_estimate": 3 / 728, "exp_conf_low": 0.001,
             "exp_conf_high": 0.01, "n_participants": 12, "n_events": 12, "converged": True},
            {"model": "pois", "term": "arm[T.intervention]", "estimate": 1.0, "std_error": 0.6,
             "robust": True, "p_value": 0.1, "exp_estimate": 2.7, "exp_conf_low": 0.8,
             "exp_conf_high": 8.0, "n_participants": 12, "n_events": 12, "converged": True},
            {"model": "cox", "term": "arm[T.intervention]", "estimate": 1.0, "std_error": 0.6,
             "robust": False, "p_value": 0.1, "exp_estimate": 2.7, "exp_conf_low": 0.8,
             "exp_conf_high": 8.0, "n_participants": 12, "n_events": 8, "converged": True},
        ]
    )  # fmt: skip
    mt = tables.model_table(est, 5, cells)
    assert set(mt["events"]) == {SUPPRESSED}  # 12 - 9 = 3 otherwise
    assert set(mt["participants"]) == {"12"}  # the analysed total, shown as in the flow table
    intercept = mt[mt["term"] == "Intercept"].iloc[0]
    assert intercept["estimate (log)"] == SUPPRESSED  # exp(intercept) * exposure = 3 events
    medians = pd.DataFrame(
        {
            "arm": ["control", "intervention"],
            "n": [6, 6],
            "events": [2, 6],
            "median_time": [np.nan] * 2,
        }
    )
    shown = disclosure.suppress_counts(medians, 5)
    assert list(shown["events"]) == ["<5", SUPPRESSED]  # not 8 - 6 = 2 from the Cox total
    assert set(disclosure.suppress_counts(medians, 5, hide_all=True)["n"]) == {SUPPRESSED}
    assert list(tables.not_reached(medians)["median_time"]) == ["not reached"] * 2
    design = {"n": 12, "allocation": 0.5, "followup_days": 182, "dropout": 1 / 12,
              "rate_per_day": 3 / 930, "frailty_var": 0.4}  # fmt: skip
    d = tables.design_table(design, people, 5, cells).set_index("parameter")["value"]
    assert d["ended follow-up early"] == "<5 of 12"
    assert "0.08" not in " ".join(d) and "0.0833" not in " ".join(d)
    assert d["control-arm event rate"] == SUPPRESSED
    follow = d["observed follow-up"]
    low = (20 + 4 * 182) / 5 / tables.DAYS_PER_MONTH  # the mean of the 5 shortest
    assert f"range {low:.1f} to 6.0" in follow
    assert f"{20 / tables.DAYS_PER_MONTH:.1f}" not in follow  # the withdrawal's own 0.7 months
    t1 = tables.table1(people, CONFIG, cells=cells)
    assert "control (N=6)" in t1.columns
    ended = t1[t1["level"] == "withdrawn"].iloc[0]
    assert ended["control (N=6)"] == "<5"
    ft = tables.flow_table(flow, 5, cells).set_index("stage")
    assert ft.loc["Analysed", "control"] == "6"


def test_not_identified_and_effect_table():
    """A boundary zero-inflation term (SE in the millions, interval 0 to inf) reads "not
    identified"; the intervention row of each model is in the effect table with its plain
    title and configured name."""
    config = {**CONFIG, "models": [{"name": "nb", "kind": "negbin"}, {"name": "z", "kind": "zinb"}]}
    est = pd.DataFrame(
        [
            {"model": "z", "term": "arm[T.intervention]", "estimate": -1.2, "std_error": 0.13,
             "robust": False, "p_value": 1e-20, "exp_estimate": 0.3, "exp_conf_low": 0.234,
             "exp_conf_high": 0.384, "n_participants": 300, "n_events": 630, "converged": True},
            {"model": "z", "term": "zero_Intercept", "estimate": -30.05, "std_error": 1372956.2,
             "robust": False, "p_value": 0.99998, "exp_estimate": 8.9e-14, "exp_conf_low": 0.0,
             "exp_conf_high": np.inf, "n_participants": 300, "n_events": 630, "converged": True},
            {"model": "nb", "term": "arm[T.intervention]", "estimate": np.nan, "std_error": np.nan,
             "robust": False, "p_value": np.nan, "exp_estimate": np.nan, "exp_conf_low": np.nan,
             "exp_conf_high": np.nan, "n_participants": 300, "n_events": 630, "converged": False,
             "message": "did not converge"},
        ]
    )  # fmt: skip
    assert tables.identified(est.iloc[0]) and not tables.identified(est.iloc[1])
    mt = tables.model_table(est, 5, entries=tables.model_entries(config)).set_index("term")
    assert mt.loc["zero_Intercept", "estimate (log)"] == "not identified"
    assert mt.loc["zero_Intercept", "SE"] == "" and mt.loc["zero_Intercept", "ratio (95% CI)"] == ""
    assert mt.loc["arm[T.intervention]", "ratio (95% CI)"].iloc[0] == "0.30 (0.23–0.38)"
    assert tables.is_nuisance("zero_Intercept") and tables.is_nuisance("C(week)[T.2]")
    assert not tables.is_nuisance("arm[T.intervention]")
    et = tables.effect_table(est, config, tables.model_entries(config)).set_index("internal name")
    assert et.loc["z", "model"] == "Zero-inflated negative binomial"
    assert et.loc["z", "estimate (95% CI)"] == "0.30 (0.23–0.38)" and et.loc["z", "p"] == "<0.001"
    assert et.loc["nb", "status"] == "not estimable: did not converge"
    html_page = render.table_html(et.reset_index(), "c", fine_print={"model": "internal name"})
    assert "Zero-inflated negative binomial<br/><small>z</small>" in html_page
    assert "<th>internal name</th>" not in html_page


def test_source_line_names_the_file_and_its_manifest_hash(tmp_path):
    import hashlib

    from recurstudy import provenance

    (tmp_path / "results").mkdir()
    f = tmp_path / "results" / "rates.csv"
    f.write_bytes(b"quantity,arm\nrate,control\n")
    line = render.source_html("results/rates.csv", tmp_path)
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    assert digest == provenance.sha256_file(f)
    assert f"<code>results/rates.csv</code> SHA-256 <code>{digest}</code>" in line
    assert "missing" in render.source_html(["results/nope.csv"], tmp_path)
    table = render.table_html(pd.DataFrame({"a": [1]}), "cap", source=["results/rates.csv"],
                              run_dir=tmp_path)  # fmt: skip
    assert table.endswith(line) and "rs-source" in table


def test_rounding_for_reading():
    df = pd.DataFrame(
        {"replicates": [500.0, np.nan], "power": [0.99412, 1.0], "p_value": [1e-9, 0.5]}
    )
    out = tables.format_frame(df, 2)
    assert list(out["replicates"]) == ["500", ""]
    assert list(out["power"]) == ["0.99", "1.00"] and list(out["p_value"]) == ["<0.001", "0.500"]
    assert disclosure.coarse_share(35, 300, 5) == "12%"
    assert disclosure.coarse_share(1, 12, 5) == "<5 of 12"
    assert disclosure.coarse_share(10, 12, 5) == ">7 of 12"  # 2 who did not: also a small group
    assert np.isnan(disclosure.kanon_range([1, 2, 3], 5)[0])


def tiny_selection(people: pd.DataFrame, episodes: pd.DataFrame) -> tuple[list, list]:
    """12 demo participants: 6 control (one who ended follow-up early, at most 3 events in all)
    and 6 intervention who completed with at least one event each."""
    k = episodes.groupby("participant_id").size()
    people = people.assign(k=people["participant_id"].map(k).fillna(0).astype(int))
    people = people.sort_values("participant_id")
    ctrl = people[people["arm"] == "control"]
    done = ctrl["end_reason"] == "completed"
    early = ctrl[~done & (ctrl["k"] <= 1)].head(1)
    rest = pd.concat([ctrl[done & (ctrl["k"] == 0)].head(3), ctrl[done & (ctrl["k"] == 1)].head(2)])
    treated = people[(people["arm"] == "intervention") & (people["end_reason"] == "completed")]
    control = list(early["participant_id"]) + list(rest["participant_id"])
    return control, list(treated[treated["k"] >= 1]["participant_id"].head(6))


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> Path:
    """The workflow on 12 demo participants (6 per arm; at most 3 control events, one control
    participant who ended follow-up early), no pain-score table, a small power run, sites and
    bootstrap off."""
    run = tmp_path_factory.mktemp("tiny_run")
    (run / "cohort").mkdir()
    people = pd.read_csv(REPO / "data/demo/participants.csv", dtype=str)
    eps = pd.read_csv(REPO / "data/demo/episodes.csv", dtype=str)
    control, treated = tiny_selection(people, eps)
    assert len(control) == 6 and len(treated) == 6
    keep = control + treated
    people[people["participant_id"].isin(keep)].to_csv(run / "cohort/participants.csv", index=False)
    eps[eps["participant_id"].isin(keep)].to_csv(run / "cohort/episodes.csv", index=False)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["data"] = {"participants": "cohort/participants.csv", "episodes": "cohort/episodes.csv"}
    config["adjust_for"] = []
    config["models"] = [
        {"name": "km_first_episode", "kind": "kaplan_meier"},
        {"name": "cox_first_episode", "kind": "cox"},
        {"name": "poisson_rate", "kind": "poisson"},
        {"name": "negbin_rate", "kind": "negbin"},
    ]
    config["claims"] = [c for c in config["claims"] if c["id"] == "episodes_68"]
    config["power"] = {"replicates": 10, "chunk_size": 10, "seed": 7, "alpha": 0.05,
                       "mde_grid": [0.3, 0.6], "grid_replicates": 10}  # fmt: skip
    config["sites"] = {"enabled": False}
    config["bootstrap"] = {"replicates": 0}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_workflow(run)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run


def test_tiny_cohort_workflow_discloses_nothing(tiny_report):
    """Through the workflow, on 12 participants: the control arm's 3 events appear nowhere, the
    dropout is not 1/12, no follow-up percentile is printed, the pain section says why it is
    empty, and every table names its source file with the manifest's hash."""
    import json as _json

    page = (tiny_report / "reports/report.html").read_text(encoding="utf-8")
    body = _strip_data_uris(page)
    rates = pd.read_csv(tiny_report / "results/rates.csv")
    per = rates[rates["quantity"] == "rate"].drop_duplicates("arm").set_index("arm")["events"]
    assert 0 < per["control"] < 5 <= per["intervention"]
    seen = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))
    for k in (per["control"], per["intervention"], per.sum()):
        assert not re.search(rf"\b{int(k)} pain episodes\b", seen), k
    assert "&lt;5 pain episodes" in seen or "<5 pain episodes" in seen
    assert "0.0833" not in seen and "0.083" not in seen
    assert re.search(r"ended follow-up early (&lt;5 of 12|&gt;7 of 12|\d+%)", seen)
    assert "followup_percentiles" not in seen
    assert "No pain-score table was given" in seen
    manifest = _json.loads((tiny_report / "reports/manifest.json").read_text())
    hashes = {e["path"]: e["sha256"] for e in manifest.get("outputs", []) if isinstance(e, dict)}
    for path in ("results/rates.csv", "results/estimates.csv", "results/claims.csv"):
        digest = re.search(rf"<code>{re.escape(path)}</code> SHA-256 <code>([0-9a-f]{{64}})", body)
        assert digest, path
        if path in hashes:
            assert digest.group(1) == hashes[path]
    models = pd.read_csv(tiny_report / "reports/tables/models.csv", dtype=str)
    assert set(models["events"]) == {SUPPRESSED}


def test_wide_tables_are_split_not_scrolled():
    df = pd.DataFrame([{f"col_{i}": i for i in range(20)}])
    assert render.column_chunks(list(df.columns), 12)[1][:2] == ["col_0", "col_1"]
    page = render.table_html(df, "wide")
    assert page.count("<table") == 2  # 2 key columns + 10, then the 2 keys + the other 8
    assert "<th>col 19</th>" in page  # column names read as words and can wrap
    assert all(len(re.findall("<th>", t)) <= 12 for t in page.split("</table>"))
