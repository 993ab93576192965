"""The Snakemake workflow end to end on the demo cohort, run the way users run it on their data:
from its own folder with --directory and --configfile, writing nothing into the repository."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.workflow

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def _run(repo: Path, run: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(repo / "Snakefile"),
        "--directory",
        str(run),
        "--configfile",
        str(run / "config.yaml"),
        "--cores",
        "2",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def _setup(repo: Path, run: Path, **overrides) -> dict:
    shutil.copytree(repo / "data/demo", run / "cohort")
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    config["data"] = {
        "participants": "cohort/participants.csv",
        "episodes": "cohort/episodes.csv",
        "pain_scores": "cohort/pain_scores.csv",
    }
    config.update(overrides)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def test_analysis_datasets(demo_run):
    cp = pd.read_parquet(demo_run / "results/analysis/counting_process.parquet")
    counts = pd.read_parquet(demo_run / "results/analysis/counts.parquet")
    fe = pd.read_parquet(demo_run / "results/analysis/first_episode.parquet")
    episodes = pd.read_csv(demo_run / "cohort/episodes.csv")
    assert len(fe) == len(counts) == 300
    assert cp["event"].sum() == counts["n_episodes"].sum() == len(episodes)
    assert (cp["stop"] > cp["start"]).all()


def test_estimates_cover_truth(demo_run):
    est = pd.read_csv(demo_run / "results/estimates.csv")
    models = set(est["model"])
    for name in ("andersen_gill", "negbin_rate", "cox_first_episode", "pwp_gap_time"):
        assert name in models and f"{name}_adjusted" in models
    arm = est[est["term"] == "arm[T.intervention]"].set_index("model")
    for name in ("andersen_gill", "negbin_rate"):
        assert arm.loc[name, "converged"]
        assert arm.loc[name, "exp_conf_low"] < 0.32 < arm.loc[name, "exp_conf_high"]


def test_invalid_cohort_stops_with_report(repo, tmp_path):
    _setup(repo, tmp_path)
    ep = tmp_path / "cohort/episodes.csv"
    lines = ep.read_text().splitlines()
    lines[3] = "P9999," + lines[3].split(",", 1)[1]  # unknown participant on line 4
    lines[5] = ",".join(lines[5].split(",")[:3] + ["11"])  # severity out of range on line 6
    ep.write_text("\n".join(lines) + "\n")
    proc = _run(repo, tmp_path)
    assert proc.returncode != 0
    assert "validation failed" in proc.stderr
    failures = pd.read_csv(tmp_path / "results/validation/failure_cases.csv")
    assert {(r.table, int(r.row)) for r in failures.itertuples()} >= {
        ("episodes", 4),
        ("episodes", 6),
    }
    assert (tmp_path / "results/validation/report.md").exists()
    assert not (tmp_path / "results/analysis").exists()
    assert not (tmp_path / "results/validated/participants.parquet").exists()


def test_missing_table_is_a_validation_failure(repo, tmp_path):
    _setup(repo, tmp_path)
    (tmp_path / "cohort/episodes.csv").unlink()
    proc = _run(repo, tmp_path)
    assert proc.returncode != 0
    assert "validation failed" in proc.stderr and "MissingInputException" not in proc.stderr
    failures = pd.read_csv(tmp_path / "results/validation/failure_cases.csv")
    assert list(failures["check"]) == ["readable"] and "not found" in failures["value"].iloc[0]
