"""The malformed-cohort corpus (tests/bad_inputs/<case>/, made by make_corpus.py there).

Each case runs the validation entry point of the command line (``recurstudy validate``:
:func:`recurstudy.validate.main_validate`, which does what the workflow's validate rule does) in a
temporary folder, and checks the promised outcome: a failure row naming table / row / column /
check with a non-zero exit and no clean tables, or a pass with the documented warning. Never a
traceback, never clean tables beside a failed report.

Cohorts that validate but are analytically degenerate (one arm without episodes, a single
participant, nobody followed after day 0, a single arm) are also derived and fitted with every
default model, then judged by the demo's claims: nothing may raise, and a model whose intervention
effect the data cannot estimate must say so (converged = False), not print a number.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recurstudy.validate import main_validate

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expect.yaml").exists())
DEGENERATE = [
    c for c in CASES if yaml.safe_load((CORPUS / c / "expect.yaml").read_text()).get("degenerate")
]
CLEAN = ("participants", "episodes", "pain_scores")


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    outcomes = [yaml.safe_load((CORPUS / c / "expect.yaml").read_text())["outcome"] for c in CASES]
    assert {"error", "ok"} <= set(outcomes)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def _prepare(case: str, tmp_path: Path) -> tuple[Path, dict]:
    """The case copied into a run folder, with its config (minimal, merged with the case's)."""
    run = tmp_path / "run"
    shutil.copytree(CORPUS / case, run)
    data = {t: f"{t}.csv" for t in CLEAN if (run / f"{t}.csv").exists()}
    data.setdefault("episodes", "episodes.csv")
    config = {"data": data, "on_invalid": "fail"}
    own = run / "config.yaml"
    if own.exists():
        config = _merge(config, yaml.safe_load(own.read_text(encoding="utf-8")))
    (run / "run_config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return run, config


def _validate(run: Path, capsys) -> tuple[int, str]:
    code = main_validate(
        str(run / "run_config.yaml"),
        str(run / "results" / "validation"),
        str(run / "results" / "validated"),
        base_dir=str(run),
    )
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: str, tmp_path: Path, capsys, caplog) -> None:
    expect = yaml.safe_load((CORPUS / case / "expect.yaml").read_text(encoding="utf-8"))
    run, _ = _prepare(case, tmp_path)
    with caplog.at_level(logging.DEBUG):
        code, err = _validate(run, capsys)
    assert "Traceback" not in err and "Traceback" not in caplog.text, err
    report_dir = run / "results" / "validation"
    clean_dir = run / "results" / "validated"
    report_md = (report_dir / "report.md").read_text(encoding="utf-8")
    failures = pd.read_csv(
        report_dir / "failure_cases.csv", dtype=str, keep_default_na=False, na_filter=False
    )
    if expect["outcome"] == "error":
        assert code == 1, err
        assert "validation failed" in err
        assert "**Result: failed.**" in report_md
        # nothing a later stage could mistake for a validated cohort
        assert not any((clean_dir / f"{t}.parquet").exists() for t in CLEAN)
        want = expect["failure"]
        match = failures[
            (failures["table"] == want["table"])
            & failures["check"].str.contains(want["check"], regex=False)
        ]
        if "column" in want:
            match = match[match["column"] == want["column"]]
        if "row" in want:
            match = match[match["row"] == str(want["row"])]
        if "value" in want:
            match = match[match["value"].str.contains(want["value"], regex=False)]
        assert len(match), f"no failure like {want}; got:\n{failures.head(20).to_string()}"
        # the file is named wherever a failure points to it
        assert (match["file"] != "").all() or want["table"] not in _prepare_files(run)
    else:
        assert code == 0, err + report_md
        assert "**Result: passed" in report_md
        assert (clean_dir / "participants.parquet").exists()
        assert (clean_dir / "episodes.parquet").exists()
        if expect.get("warning"):
            assert expect["warning"] in err, err
            assert expect["warning"] in report_md
        if expect.get("report_md_excludes"):
            assert expect["report_md_excludes"] not in report_md
        if expect.get("ids"):
            ids = pd.read_parquet(clean_dir / "participants.parquet")["participant_id"]
            assert sorted(ids) == sorted(expect["ids"])  # text, leading zeros kept
        if expect.get("excluded"):
            excluded = pd.read_csv(report_dir / "excluded.csv", dtype=str)
            assert sorted(excluded["participant_id"]) == sorted(expect["excluded"])
            ids = set(pd.read_parquet(clean_dir / "participants.parquet")["participant_id"])
            assert not ids & set(expect["excluded"])


def _prepare_files(run: Path) -> set[str]:
    config = yaml.safe_load((run / "run_config.yaml").read_text())
    return set(config["data"])


def test_case_and_whitespace_twins_name_both_rows(tmp_path: Path, capsys) -> None:
    """'P01' and 'p01': both rows are failures of the same check, with their values."""
    run, _ = _prepare("id_case", tmp_path)
    code, _ = _validate(run, capsys)
    assert code == 1
    f = pd.read_csv(run / "results/validation/failure_cases.csv", dtype=str)
    twins = f[f["check"].str.contains("ignoring case")]
    assert sorted(zip(twins["row"], twins["value"], strict=True)) == [("2", "P01"), ("8", "p01")]


def test_unknown_id_spelled_differently_is_pointed_out(tmp_path: Path, capsys) -> None:
    run, _ = _prepare("id_case_in_episodes", tmp_path)
    code, err = _validate(run, capsys)
    assert code == 1
    assert "1 row(s) name a participant spelled differently, e.g. 'p01'" in err
    assert "episodes.csv:3 where participants has 'P01'" in err


def test_cli_exit_code_and_stderr(tmp_path: Path) -> None:
    """The installed command line: exit 1 with a one-line reason, no traceback."""
    import subprocess
    import sys

    run, _ = _prepare("enc_utf16_bom", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "recurstudy.cli", "validate", "--config", "run_config.yaml"]
        + ["--out", "v", "--clean", "c", "--directory", "."],
        cwd=run,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "validation failed" in proc.stderr


# ----------------------------------------------------------------- degenerate but valid


def _analyse(case: str, tmp_path: Path, capsys) -> tuple[pd.DataFrame, pd.DataFrame]:
    from recurstudy.claims import evaluate_claims
    from recurstudy.config import load_config
    from recurstudy.derive import derive_all, read_clean
    from recurstudy.models import fit_spec, model_specs, stack_estimates, write_result

    run, config = _prepare(case, tmp_path)
    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/config.yaml").read_text())
    config = {**config, "claims": demo["claims"]}
    (run / "run_config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    code, err = _validate(run, capsys)
    assert code == 0, err
    config = load_config(run / "run_config.yaml")
    tables = read_clean(run / "results/validated")
    data: dict = derive_all(tables["participants"], tables["episodes"], config)
    data.update(tables)
    paths = []
    models_dir = run / "results/models"
    for spec in model_specs(config):
        result = fit_spec(spec, data)
        path = models_dir / f"{spec.name}.csv"
        write_result(result, path, models_dir / spec.name)
        paths.append(path)
    estimates = stack_estimates(paths)
    claims = evaluate_claims(config, estimates, models_dir)
    return estimates, claims


def _nonsense(estimates: pd.DataFrame, term_prefix: str = "arm[T.") -> pd.DataFrame:
    """Converged intervention effects that are not finite, or ratios beyond 1e-6 .. 1e6 (a
    coefficient running off to infinity), or an interval of zero width."""
    eff = estimates[estimates["term"].astype(str).str.startswith(term_prefix)]
    conv = eff[eff["converged"].astype(str).str.lower() == "true"]
    est = pd.to_numeric(conv["estimate"], errors="coerce")
    se = pd.to_numeric(conv.get("std_error", pd.Series(index=conv.index)), errors="coerce")
    bad = ~est.map(math.isfinite) | (est.abs() > math.log(1e6)) | (se <= 0) | se.isna()
    return conv[bad.to_numpy()]


@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_cohort_models_fail_cleanly(case: str, tmp_path: Path, capsys, caplog) -> None:
    with caplog.at_level(logging.ERROR):
        estimates, claims = _analyse(case, tmp_path, capsys)
    assert "Traceback" not in caplog.text, caplog.text
    bad = _nonsense(estimates)
    assert bad.empty, bad[["model", "term", "estimate", "std_error", "converged"]].to_string()
    failed = estimates[estimates["converged"].astype(str).str.lower() != "true"]
    assert (failed["message"].fillna("").str.len() > 0).all()  # every failure says why
    # a claim whose model failed gets no verdict but "not estimable"
    assert claims["verdict"].notna().all()
    judged = claims[claims["verdict"].astype(str) != "not estimable"]
    for model in judged["model"]:
        row = estimates[(estimates["model"] == model) & estimates["term"].str.startswith("arm[T.")]
        assert (row["converged"].astype(str).str.lower() == "true").all(), (model, claims)
