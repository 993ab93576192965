"""recurstudy.settings: what each stage reads of the config, strictly, and the code hashes that
make Snakemake re-run the jobs whose code changed (and only those)."""

import json
import shutil

import numpy as np
import pytest

from recurstudy import settings as st
from recurstudy.config import load_config


def test_settings_refuse_undeclared_keys():
    s = st.load_settings(json.dumps({"arms": {"control": "a"}}), "derive")
    assert s["arms"] == {"control": "a"} and s.get("arms") == {"control": "a"}
    with pytest.raises(KeyError, match="'washout_days' is not among the settings of stage"):
        s.get("washout_days", 0)  # a default would hide a forgotten key: refuse it


def test_stage_settings_hold_only_what_the_stage_reads(repo):
    config = load_config(repo / "config/config.yaml")
    derive = json.loads(st.stage_settings(config, "derive"))
    assert set(derive) == {"arms", "covariates", "exclude_episode_time", "terminal_events"} | (
        {"washout_days"} if "washout_days" in config else set()
    )
    assert json.loads(st.stage_settings(config, "report")) == json.loads(json.dumps(config))
    # canonical: the same config gives the same string whatever the key order
    shuffled = dict(reversed(list(config.items())))
    assert st.stage_settings(shuffled, "claims") == st.stage_settings(config, "claims")


def test_spec_round_trip(repo):
    from recurstudy.models import model_specs

    config = load_config(repo / "config/config.yaml")
    for spec in model_specs(config):
        assert st.spec_from_settings(st.spec_settings(spec)) == spec


def test_module_closure_follows_imports():
    cox = st.module_closure(["recurstudy.models.survival"])
    assert {"recurstudy.models.coxph_engine", "recurstudy.models.base", "recurstudy.contract"} <= (
        set(cox)
    )
    assert "recurstudy.models" in cox and "recurstudy" in cox  # parent packages run on import
    counts = st.module_closure(["recurstudy.models.counts"])
    assert "recurstudy.models.coxph_engine" not in counts
    assert "recurstudy.report" not in st.module_closure(["recurstudy.derive"])


def _ast_imports(path):
    """The package imports of a file by its syntax tree (the reference for the scanner)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "recurstudy")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "recurstudy":
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_import_scanner_finds_every_import_the_syntax_tree_has():
    """The start-up's regular-expression scan misses no import of any package file."""
    files = sorted(st.PACKAGE_DIR.rglob("*.py"))
    assert len(files) > 30
    for path in files:
        assert _ast_imports(path) <= st._imports(path), path


def test_import_scanner_reads_every_form(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os, recurstudy.io as rio  # a comment\n"
        "from recurstudy.models import (\n    base,  # why\n    counts as c,\n)\n"
        "def f():\n    from recurstudy import report\n    import recurstudy.plan\n"
        "from .relative import x\nfrom recurstudyx import y\n"
    )
    assert st._imports(source) == {
        "recurstudy.io",
        "recurstudy.models",
        "recurstudy.models.base",
        "recurstudy.models.counts",
        "recurstudy",
        "recurstudy.report",
        "recurstudy.plan",
    }
    assert _ast_imports(source) == st._imports(source)


def test_code_hash_changes_only_for_the_code_a_job_runs(tmp_path, monkeypatch):
    """Editing the Cox engine changes the Cox models' hash, not the count models'."""
    copy = tmp_path / "recurstudy"
    shutil.copytree(st.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(st, "PACKAGE_DIR", copy)
    st.clear_caches()
    before = {k: st.source_hash(f"recurstudy.models.{k}") for k in ("survival", "counts")}
    engine = copy / "models" / "coxph_engine.py"
    engine.write_text(engine.read_text() + "\n# a new version\n")
    st.clear_caches()  # hashes are computed once per process
    after = {k: st.source_hash(f"recurstudy.models.{k}") for k in ("survival", "counts")}
    st.clear_caches()
    assert after["survival"] != before["survival"]
    assert after["counts"] == before["counts"]


def test_workflow_parse_imports_no_scipy_stats():
    """Snakemake imports every model module at start-up: scipy.stats (about a second) must wait
    until a fit needs it (recurstudy.lazy)."""
    import subprocess
    import sys

    code = (
        "import sys, recurstudy.models, recurstudy.power, recurstudy.claims;"
        "recurstudy.models._load_all();"
        "loaded = sorted(m for m in ('scipy.stats', 'statsmodels', 'lifelines')"
        " if m in sys.modules and type(sys.modules[m]).__name__ == 'module');"
        "print(loaded)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from recurstudy.models.counts import stats

    assert stats.norm.ppf(0.975) == pytest.approx(1.959963984540054, rel=1e-15)


@pytest.mark.parametrize("df", [1, 2, 3.5, 10, 250])
def test_tails_without_scipy_stats_equal_scipy_stats(df):
    """The models' normal, chi-square and t tails are scipy.stats' values, bit for bit."""
    from scipy import stats

    from recurstudy.models import base

    x = np.array([-np.inf, -5, -1e-300, -0.0, 0.0, 1e-300, 0.5, 1.96, 3, 40, 1e10, np.inf, np.nan])
    q = np.array([0.5, 0.9, 0.95, 0.975, 0.995, 1 - 1e-12])
    pairs = [
        (base.norm_sf(x), stats.norm.sf(x)),
        (base.norm_ppf(q), stats.norm.ppf(q)),
        (base.chi2_sf(x, df), stats.chi2.sf(x, df)),
        (base.t_sf(x, df), stats.t.sf(x, df)),
        (base.t_ppf(q, df), stats.t.ppf(q, df)),
    ]
    for ours, theirs in pairs:
        np.testing.assert_array_equal(ours, theirs)
    for bad in (0, -1, np.nan):
        assert np.isnan(base.chi2_sf(1.0, bad)) and np.isnan(stats.chi2.sf(1.0, bad))
