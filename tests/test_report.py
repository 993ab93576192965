"""The report: disclosure control (primary and secondary suppression), the tables, the methods
text, offline rendering, deterministic bytes, and no identifier or date of the demo cohort in
anything the report writes.

The `demo_report` fixture (session scope, shared with test_audit.py and test_browser.py) runs the
whole workflow once on the demo cohort into a temporary run directory, with a small power run.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from recurstudy import report as rp
from recurstudy.config import load_config

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


def run_workflow(run: Path, *extra: str) -> subprocess.CompletedProcess:
    """snakemake on the run directory, the way users run it on their own data."""
    import os

    env = dict(os.environ, PATH=f"{SNAKEMAKE.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(run),
        "--configfile",
        str(run / "config.yaml"),
        "--cores",
        "2",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)


_RUNS: dict[str, Path] = {}  # test_audit and test_browser import the fixture: one run for all


@pytest.fixture(scope="session")
def demo_report(tmp_path_factory) -> Path:
    """A run directory with the whole workflow run on the demo cohort (20 power replicates)."""
    if "demo" in _RUNS:
        return _RUNS["demo"]
    run = tmp_path_factory.mktemp("report_run")
    shutil.copytree(REPO / "data/demo", run / "cohort")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["data"] = {
        "participants": "cohort/participants.csv",
        "episodes": "cohort/episodes.csv",
        "pain_scores": "cohort/pain_scores.csv",
    }
    config["power"] = {
        "replicates": 20,
        "chunk_size": 10,
        "seed": 20261126,
        "alpha": 0.05,
        "mde_grid": [0.2, 0.4, 0.6],
        "grid_replicates": 10,
        "pain_replicates": 2,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_workflow(run)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _RUNS["demo"] = run
    return run


# ------------------------------------------------------------------ disclosure control units


def test_fmt_count():
    assert rp.fmt_count(4, 5) == "<5"
    assert rp.fmt_count(5, 5) == "5"
    assert rp.fmt_count(0, 5) == "<5"
    assert rp.fmt_count(0, 5, suppress_zero=False) == "0"
    assert rp.fmt_count(7, 10) == "<10"


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
    primary, secondary = rp.suppress(values, groups, 5)
    assert primary == {("b", "x")}
    assert secondary  # the lone small cell is protected
    assert not _recoverable(values, groups, primary | secondary)
    # the smallest other cell of its column and of its row go first
    assert ("c", "x") in secondary and ("b", "y") in secondary


def test_no_suppression_when_all_large():
    values = {("a", "x"): 10, ("a", "y"): 11}
    assert rp.suppress(values, [list(values)], 5) == (set(), set())


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
    t = rp.table1(_participants(), CONFIG)
    hdr = [c for c in t.columns if c.startswith(("control", "intervention", "Overall"))]
    assert hdr == ["control (N=20)", "intervention (N=20)", "Overall (N=40)"]
    sex = t[t["level"].isin(["F", "M"])].set_index("level")
    assert sex.loc["F", "control (N=20)"] == "<5"
    # control F = 3 would follow from N=20 - M and from Overall F - intervention F:
    assert sex.loc["M", "control (N=20)"] == rp.SUPPRESSED
    row_hidden = [sex.loc["F", c] in ("<5", rp.SUPPRESSED) for c in hdr]
    assert sum(row_hidden) >= 2
    for c in hdr:  # every column: zero or at least two hidden cells
        assert sum(sex.loc[lev, c] in ("<5", rp.SUPPRESSED) for lev in ("F", "M")) != 1
    assert t.loc[t["characteristic"].str.startswith("Age"), "control (N=20)"].iloc[0].count("(")
    # nothing below 5 is shown as a number
    for cell in t[hdr].to_numpy().ravel():
        m = re.match(r"^(\d+) \(", cell)
        assert not m or int(m.group(1)) >= 5


def test_table1_small_arm_and_zero_cells():
    t = rp.table1(_participants(n_c=4, f_c=0), CONFIG)
    assert "control (N=<5)" in t.columns
    col = t["control (N=<5)"]
    assert all(v in ("", "<5", rp.SUPPRESSED, "n<5") for v in col)
    # zero women in intervention is suppressed as well (attribute disclosure)
    t2 = rp.table1(_participants(f_i=0), CONFIG)
    f = t2[t2["level"] == "F"].iloc[0]
    assert f["intervention (N=20)"] == "<5"


def test_rates_per_100_participant_months():
    counts = pd.DataFrame(
        {
            "arm": ["control"] * 10 + ["intervention"] * 10,
            "n_episodes": [3] * 10 + [1] * 10,
            "exposure_days": [rp.DAYS_PER_MONTH * 10] * 20,  # 10 participant-months each
        }
    )
    t = rp.rates_table(counts, CONFIG).set_index("arm")
    assert t.loc["control", "episodes"] == "30"
    assert t.loc["control", "participant-months"] == "100"
    assert t.loc["control", "episodes per 100 participant-months"] == "30.0"
    lo = stats.chi2.ppf(0.025, 60) / 2
    hi = stats.chi2.ppf(0.975, 62) / 2
    assert t.loc["control", "95% CI"] == f"{lo:.1f}–{hi:.1f}"
    assert t.loc["Overall", "episodes per 100 participant-months"] == "20.0"
    # a small episode count hides its rate and, secondarily, another arm's
    counts.loc[counts["arm"] == "intervention", "n_episodes"] = [1, 1, 1] + [0] * 7
    t = rp.rates_table(counts, CONFIG).set_index("arm")
    assert t.loc["intervention", "episodes"] == "<5"
    assert t.loc["intervention", "episodes per 100 participant-months"] == rp.SUPPRESSED
    hidden = [t.loc[a, "episodes"] in ("<5", rp.SUPPRESSED) for a in t.index]
    assert sum(hidden) >= 2


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
    t = rp.flow_table(_flow(0, 0)).set_index("stage")
    assert t.loc["Excluded by validation", "control"] == "0"  # a structural zero is shown
    assert t.loc["Analysed", "Total"] == "160"
    t = rp.flow_table(_flow(2, 7)).set_index("stage")
    assert t.loc["Excluded by validation", "control"] == "<5"
    assert t.loc["Analysed", "control"] == "80"  # analysed counts are kept visible
    # control's 2 would follow from received - analysed: received is hidden instead
    assert t.loc["Received", "control"] == rp.SUPPRESSED
    hidden = {(s, c) for s in t.index for c in t.columns if t.loc[s, c] in ("<5", rp.SUPPRESSED)}
    cols = ["control", "intervention", "Total"]
    stages = ["Received", "Excluded by validation", "Analysed"]
    groups = [[(s, c) for s in stages] for c in cols] + [[(s, c) for c in cols] for s in stages]
    assert not _recoverable(None, groups, hidden)
    rec = rp.record_flow_table(_flow()).set_index("table")
    assert rec.loc["Episodes", "excluded"] == "<5"


def test_methods_paragraph_from_config():
    est = pd.DataFrame({"model": ["ag", "nb"], "robust": [True, False]})
    text = rp.methods_paragraph(
        {**CONFIG, "claims": [{"id": "c"}], "power": {"replicates": 99, "seed": 7}},
        est,
        {"python": "3.11.7", "lifelines": "0.30.3"},
    )
    assert "ag: an Andersen-Gill model" in text and "formula ~ arm" in text
    assert "ag_adjusted" in text and "arm + age" in text
    assert "robust (sandwich) standard errors" in text
    assert "model-based standard errors" in text
    assert "99 simulated replicates" in text and "seed 7" in text
    assert "fewer than 5 participants" in text
    assert "lifelines 0.30.3" in text


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
    rows = rp.forest_data(est, CONFIG)
    assert list(rows["model"]) == ["ag", "nb"]
    assert not rows.set_index("model").loc["nb", "converged"]
    assert "singular" in rows.set_index("model").loc["nb", "message"]
    png = rp.png_bytes(rp.forest_figure(rows))
    assert png.startswith(b"\x89PNG") and png == rp.png_bytes(rp.forest_figure(rows))
    assert b"Software" not in png and b"matplotlib" not in png.lower()


def test_rendered_html_is_offline():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title\n\n$x^2$"),
        nbformat.v4.new_code_cell("print(1)"),
    ]
    page = rp.render_html(nb)
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
        "Claims",
        "Participant flow",
        "Baseline",
        "Episode rates",
        "Time to first",
        "mean cumulative",
        "Intervention effect",
        "Model tables",
        "Pain",
        "Power",
        "Methods",
        "Provenance",
    ]
    assert len(heads) == len(order)
    for h, key in zip(heads, order, strict=True):
        assert key.lower() in h.lower(), (h, key)
    assert page.count("<img ") >= 4
    assert "<script" not in page and not re.search(r"https?://", page)
    assert "rp.table1" not in page and "show_table(" not in page  # code hidden
    nb = nbformat.read(reports / "report.ipynb", as_version=4)
    assert any("rp.table1" in c.source for c in nb.cells)  # ... but kept in the notebook
    assert str(demo_report) not in (reports / "report.ipynb").read_text()
    assert str(demo_report) not in page
    # every model of the run is in the model table, failed or not
    models = pd.read_csv(reports / "tables/models.csv")
    est = pd.read_csv(demo_report / "results/estimates.csv")
    assert set(models["model"]) == set(est["model"])


def test_report_is_deterministic(demo_report, tmp_path):
    """The notebook re-executed and re-rendered elsewhere gives the workflow's bytes."""
    other = tmp_path / "elsewhere"
    shutil.copytree(demo_report, other, ignore=shutil.ignore_patterns(".snakemake", "reports"))
    config = load_config(other / "config.yaml")
    # the commit the run recorded (HEAD may have moved since, in a shared working tree)
    ran = (demo_report / "reports/report.ipynb").read_text()
    commit = re.search(r"source_commit = '([0-9a-f]+|unknown)'", ran).group(1)
    params = {"config": config, "source_commit": commit, "assets": "reports"}
    nb, _ = rp.execute_notebook(REPO / "workflow/notebooks/report.py.ipynb", params, other)
    page = rp.render_html(nb, title="recurstudy report")
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
