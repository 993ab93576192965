"""recurstudy.settings: what each stage reads of the config, strictly, and the code hashes that
make Snakemake re-run the jobs whose code changed (and only those)."""

import json
import shutil

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


def test_code_hash_changes_only_for_the_code_a_job_runs(tmp_path, monkeypatch):
    """Editing the Cox engine changes the Cox models' hash, not the count models'."""
    copy = tmp_path / "recurstudy"
    shutil.copytree(st.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(st, "PACKAGE_DIR", copy)
    st._imports.cache_clear()
    before = {k: st.source_hash(f"recurstudy.models.{k}") for k in ("survival", "counts")}
    engine = copy / "models" / "coxph_engine.py"
    engine.write_text(engine.read_text() + "\n# a new version\n")
    after = {k: st.source_hash(f"recurstudy.models.{k}") for k in ("survival", "counts")}
    st._imports.cache_clear()
    assert after["survival"] != before["survival"]
    assert after["counts"] == before["counts"]
