"""A changed config re-runs exactly what it affects (Snakemake's params trigger on the settings
each rule receives), and the outputs then equal those of a fresh run with the new config.

One finished run on the demo cohort (a reduced model set and a small power run, to keep this
quick) is changed three times: a claim's claimed value, ``exclude_episode_time`` and one model's
options. Each time ``snakemake -n`` must list exactly the expected jobs; the run is then
completed, and at the end every result and report file is compared byte for byte with a fresh
run of the final config.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recurstudy.report.pdf import find_chromium

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
MODELS = [
    {"name": "km", "kind": "kaplan_meier"},
    {"name": "ag", "kind": "andersen_gill"},
    {"name": "pwp_gap", "kind": "pwp", "options": {"timescale": "gap"}},
    {"name": "nb", "kind": "negbin"},
    {"name": "pain", "kind": "mixed_pain"},
]


def _snakemake(run: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{SNAKEMAKE.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(run)]
    cmd += ["--configfile", str(run / "config.yaml"), "--cores", "2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def _config(run: Path) -> dict:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["data"] = {
        "participants": "cohort/participants.csv",
        "episodes": "cohort/episodes.csv",
        "pain_scores": "cohort/pain_scores.csv",
    }
    config["models"] = MODELS
    config["adjust_for"] = ["age"]
    config["claims"][0]["model"] = "nb"
    config["claims"][1]["model"] = "pain"
    config["power"] = {
        "replicates": 8,
        "chunk_size": 4,
        "seed": 7,
        "alpha": 0.05,
        "mde_grid": [0.2, 0.4, 0.6],
        "grid_replicates": 4,
        "pain_replicates": 2,
        "informative_dropout_link": 1.0,
    }
    config["bootstrap"] = {"replicates": 8, "chunk_size": 4, "seed": 7, "bca": False}
    return config


def _write(run: Path, config: dict) -> None:
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _new_run(tmp: Path, name: str, config: dict) -> Path:
    run = tmp / name
    shutil.copytree(REPO / "data/demo", run / "cohort")
    _write(run, config)
    proc = _snakemake(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def planned_jobs(run: Path) -> dict[str, int]:
    """The jobs ``snakemake -n`` would run: {rule: count} from its job-stats table."""
    proc = _snakemake(run, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def _digests(run: Path) -> dict[str, str]:
    out = {}
    for base in ("results", "reports"):
        for p in sorted((run / base).rglob("*")):
            rel = p.relative_to(run).as_posix()
            if (
                p.is_file()
                and not rel.startswith("results/benchmarks/")
                and p.name != ("run_info.json")
            ):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


TAIL = {"claims": 1, "report": 1, "manifest": 1, "all": 1}
if find_chromium():  # the PDF is printed again from every new report.html
    TAIL["report_pdf"] = 1
PLANNED = {"plan_status": 1, **TAIL}  # the plan's definition changed


def test_changed_config_reruns_what_it_affects(tmp_path):
    config = _config(tmp_path)
    run = _new_run(tmp_path, "run", config)
    assert planned_jobs(run) == {}

    # 1. A claim's claimed value: its power simulation (with informative dropout; not its MDE
    #    grid, which does not depend on the claimed value), the claims, the report and manifest.
    config["claims"][0]["claimed"] = 0.6
    _write(run, config)
    claim_power = {
        "power_chunk": 2,
        "power_informative": 2,
        "power_summary": 1,
        "tipping_point": 1,  # the verdict at each delta is judged against the claimed value
    }
    assert planned_jobs(run) == {**claim_power, **PLANNED}
    # ... but not its statement, which only the claims table and the report show.
    config["claims"][0]["statement"] = "Re-education cut episodes by 60%."
    _write(run, config)
    assert planned_jobs(run) == {**claim_power, **PLANNED}
    assert _snakemake(run).returncode == 0
    config["claims"][0]["statement"] = "Re-education cut episodes by 60% over six months."
    _write(run, config)
    assert planned_jobs(run) == PLANNED  # the statement is part of the locked plan
    assert _snakemake(run).returncode == 0

    # 2. exclude_episode_time: derive, every model reading a derived dataset (not the pain
    #    model, nor the pain claim's power), the power design and the rate claim's simulations
    #    (its MDE grid included), sensitivity, claims, report, manifest.
    config["exclude_episode_time"] = True
    _write(run, config)
    fitted = 1 + 2 + 2 + 2  # km, ag(+adj), pwp_gap(+adj), nb(+adj)
    assert planned_jobs(run) == {
        "derive": 1,
        "fit_model": fitted,
        "estimates": 1,
        "power_design": 1,
        "power_chunk": 2,
        "power_informative": 2,
        "power_grid": 3,
        "power_summary": 1,
        "sensitivity": 1,
        "bootstrap_chunk": 2,  # the claim's model, refitted on resampled participants
        "bootstrap_summary": 1,
        "bootstrap_table": 1,
        "site_effect": 4,  # the claim's model in each of the demo's four sites
        "site_meta": 1,
        "site_stratified_ag": 1,
        "tipping_point": 1,
        "rates": 1,
        **PLANNED,
    }
    assert _snakemake(run).returncode == 0

    # 3. One model's options: that model (and its adjusted variant) and what reads the models
    #    (not the tipping-point analysis, which refits only the claims' models).
    config["models"][2]["options"] = {"timescale": "gap", "ties": "breslow"}
    _write(run, config)
    assert planned_jobs(run) == {"fit_model": 2, "estimates": 1, "sensitivity": 1, **PLANNED}
    assert _snakemake(run).returncode == 0
    assert planned_jobs(run) == {}

    # 4. The power settings: the MDE grid re-runs the grid points whose reduction changed and
    #    the summaries reading them; the dropout link, the informative replicates.
    config["power"]["mde_grid"] = [0.2, 0.4, 0.7]
    _write(run, config)
    assert planned_jobs(run) == {"power_grid": 1, "power_summary": 1, **TAIL}
    config["power"]["informative_dropout_link"] = 2.0
    _write(run, config)
    assert planned_jobs(run) == {
        "power_grid": 1,
        "power_informative": 2,
        "power_summary": 1,
        **TAIL,
    }
    assert _snakemake(run).returncode == 0
    assert planned_jobs(run) == {}

    # The updated run equals a fresh run of the final config, byte for byte.
    fresh = _new_run(tmp_path, "fresh", config)
    ours, theirs = _digests(run), _digests(fresh)
    assert sorted(ours) == sorted(theirs)
    differ = [p for p in ours if ours[p] != theirs[p]]
    assert differ == []
