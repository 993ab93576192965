"""Hostile config and data (issue 12): a config is data, not code, and an input path is a file.

- a config that Snakemake would render as a yte template (``__use_yte__``) is refused by every
  entry point we own before anything renders it (a template that would write a sentinel file is
  used, and shown to be live);
- formula terms and names outside the grammar, in models and in the IPTW propensity model;
- data paths that are FIFOs, devices or symlinks to them: a message naming ``data.<table>``,
  never a hang (a FIFO open would block);
- every CSV the package writes is spreadsheet-safe, headers of the report's tables included.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recurstudy.config import ConfigError, load_config, refuse_templating
from recurstudy.io import InputError, read_table

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
DATA = {"participants": "p.csv", "episodes": "e.csv"}


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a FIFO open blocks until a writer comes)."""

    def expired(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------- yte templating


def templated(path: Path, sentinel: Path, key: str = "__use_yte__") -> Path:
    """A config whose yte template writes `sentinel` when rendered."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"{key}: true\n"
        "data:\n"
        f"  participants: ?open({str(sentinel)!r}, 'w').write('ran') and 'p.csv'\n"
        "  episodes: e.csv\n",
        encoding="utf-8",
    )
    return path


def test_the_template_is_live(tmp_path):
    """The fixture really runs Python when yte renders it (else the tests below prove nothing)."""
    import yte

    sentinel = tmp_path / "sentinel"
    config = templated(tmp_path / "config.yaml", sentinel)
    with open(config, encoding="utf-8") as fh:
        out = yte.process_yaml(fh, require_use_yte=True)
    assert out["data"]["participants"] == "p.csv" and sentinel.read_text() == "ran"


@pytest.mark.parametrize(
    "key",
    ["__use_yte__", '"__use_yte__"', '"\\x5f_use_yte__"', "? __use_yte__\n:"],
)
def test_load_config_refuses_templates(tmp_path, key):
    sentinel = tmp_path / "sentinel"
    config = templated(tmp_path / "config.yaml", sentinel, key=key)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert "__use_yte__" in str(err.value) and "templated configs are refused" in str(err.value)
    with pytest.raises(ConfigError, match="__use_yte__"):
        refuse_templating(config)
    assert not sentinel.exists()


def test_refuse_templating_passes_plain_configs(repo):
    text = refuse_templating(repo / "config/config.yaml")
    assert text.startswith("#") or "data:" in text


def test_entry_points_refuse_templates(tmp_path):
    """`python -m recurstudy.config`, `recurstudy validate` and `recurstudy plan` stop with the
    key named, before anything renders the file."""
    sentinel = tmp_path / "sentinel"
    config = templated(tmp_path / "config.yaml", sentinel)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    commands = [
        [sys.executable, "-m", "recurstudy.config", str(config)],
        [sys.executable, "-m", "recurstudy.cli", "validate", "--config", str(config)],
        [sys.executable, "-m", "recurstudy.cli", "plan", "check", "--config", str(config)],
    ]
    for cmd in commands:
        proc = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode != 0, cmd
        assert "__use_yte__" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not sentinel.exists()


def _snakemake(run: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(run), "-n", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
    )


def test_workflow_own_configfile_is_checked_before_snakemake_loads_it(tmp_path):
    """Without --configfile the Snakefile loads config/config.yaml (of the working directory)
    with its `configfile:` directive; our check runs before it, so the template never runs."""
    run = tmp_path / "run"
    sentinel = tmp_path / "sentinel"
    templated(run / "config/config.yaml", sentinel)
    proc = _snakemake(run)
    assert proc.returncode != 0
    assert "__use_yte__" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not sentinel.exists()


def test_workflow_stops_on_a_templated_configfile(tmp_path):
    """Snakemake renders a --configfile before the Snakefile runs (ConfigSettings), so the
    template's Python has run by the time we see it: the run stops there with the key named,
    and docs/hostile-inputs.md says to check a config you did not write first. If this test
    finds the sentinel missing, Snakemake no longer renders early: update the docs."""
    run = tmp_path / "run"
    sentinel = tmp_path / "sentinel"
    config = templated(run / "config.yaml", sentinel)
    proc = _snakemake(run, "--configfile", str(config))
    assert proc.returncode != 0
    assert "__use_yte__" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sentinel.exists()  # the documented limitation: rendered before our code runs


# ---------------------------------------------------------------------- formulas and names


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"covariates": {"body mass": "numeric"}, "adjust_for": ["body mass"]}, "adjust_for[0]"),
        ({"covariates": {"body mass": "numeric"}, "adjust_for": ["body mass"]}, "covariates"),
        ({"covariates": {"bmi": "numeric"}, "adjust_for": ["bmi`+{1}"]}, "adjust_for[0]"),
        ({"covariates": {"bmi": "numeric"}, "design": "observational", "adjust_for": ["BMI"]},
         "adjust_for: 'BMI' is not declared"),
    ],
)  # fmt: skip
def test_iptw_names_are_config_errors(tmp_path, extra, words):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": DATA, **extra}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert words in str(err.value) and "Traceback" not in str(err.value)


def test_iptw_formula_goes_through_the_grammar():
    """Defence in depth: the propensity formula built from adjust_for is parsed by the safe
    grammar, so a name that slipped past the config check is a FormulaError naming it."""
    from recurstudy.formula import FormulaError
    from recurstudy.sensitivity import iptw

    counts = pd.DataFrame(
        {
            "participant_id": [f"P{i}" for i in range(8)],
            "arm": ["control", "intervention"] * 4,
            "n_episodes": [1, 0, 2, 1, 0, 1, 3, 0],
            "exposure_days": [100.0] * 8,
            "body mass": [20.0, 25.0, 30.0, 22.0, 27.0, 24.0, 21.0, 29.0],
        }
    )
    config = {"arms": {"control": "control", "intervention": "intervention"}}
    for name, words in (("body mass", "unexpected 'mass'"), ("x{1}", "'{' is not allowed")):
        with pytest.raises(FormulaError, match=re.escape(words)):
            iptw(counts.rename(columns={"body mass": name}), {**config, "adjust_for": [name]})


# ---------------------------------------------------------------------- data paths


def _special_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    links = {"fifo": fifo}
    (tmp_path / "to_fifo.csv").symlink_to(fifo)
    links["symlink to a FIFO"] = tmp_path / "to_fifo.csv"
    if Path("/dev/zero").exists():
        (tmp_path / "zero.csv").symlink_to("/dev/zero")
        links["symlink to /dev/zero"] = tmp_path / "zero.csv"
        links["/dev/null"] = Path("/dev/null")
    return links


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_and_device_paths_are_refused_without_opening(tmp_path):
    for what, path in _special_files(tmp_path).items():
        with deadline(10), pytest.raises(InputError) as err:
            read_table(path, "participants")
        message = str(err.value)
        assert "not a regular file" in message and "data.participants" in message, what
        kind = "a device" if "zero" in what or "null" in what else "a FIFO (named pipe)"
        assert kind in message, (what, message)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_config_file_that_is_a_fifo_is_refused_without_opening(tmp_path):
    os.mkfifo(tmp_path / "config.yaml")
    with deadline(10), pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path / "config.yaml")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_validate_reports_a_fifo_with_the_key(tmp_path, repo):
    """`recurstudy validate` on a config whose participants table is a FIFO: a readable
    failure naming data.participants, exit 1, promptly."""
    from recurstudy.validate import main_validate

    os.mkfifo(tmp_path / "participants.csv")
    (tmp_path / "episodes.csv").symlink_to("/dev/zero")
    config = {"data": {"participants": "participants.csv", "episodes": "episodes.csv"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with deadline(60):
        code = main_validate(
            str(tmp_path / "config.yaml"),
            str(tmp_path / "out"),
            str(tmp_path / "clean"),
            base_dir=str(tmp_path),
        )
    assert code == 1
    failures = pd.read_csv(tmp_path / "out/failure_cases.csv", dtype=str, keep_default_na=False)
    readable = failures[failures["check"] == "readable"].set_index("table")
    assert "data.participants" in readable.loc["participants", "value"]
    assert "data.episodes" in readable.loc["episodes", "value"]


# ---------------------------------------------------------------------- CSV outputs


def test_every_csv_writer_is_spreadsheet_safe():
    """Each `.to_csv(` of the package, its workflow scripts and the report notebook either is
    csvout's own or writes a frame passed through spreadsheet_safe (simulate writes input
    tables of its own making)."""
    sources = [*sorted((REPO / "src").rglob("*.py")), *sorted((REPO / "workflow").rglob("*.py"))]
    sources.append(REPO / "workflow/notebooks/report.py.ipynb")
    unsafe = []
    for path in sources:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if ".to_csv(" not in line or path.name in ("csvout.py", "simulate.py"):
                continue
            window = " ".join(lines[max(0, i - 2) : i + 1])
            if "spreadsheet_safe(" not in window:
                unsafe.append(f"{path.relative_to(REPO)}:{i + 1}: {line.strip()}")
    assert not unsafe, unsafe


def test_report_table_headers_and_negative_numbers():
    from recurstudy.csvout import spreadsheet_safe

    df = pd.DataFrame(
        {
            "=cmd|' /C calc'!A0 (N=12)": ["-0.5", "-1.2e-3", "-2+3", "-", "\t=1", "\r@x"],
            "value": [-0.5, 1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    safe = spreadsheet_safe(df, headers=True)
    assert list(safe.columns) == ["'=cmd|' /C calc'!A0 (N=12)", "value"]
    col = safe.iloc[:, 0].tolist()
    assert col == ["-0.5", "-1.2e-3", "'-2+3", "'-", "'\t=1", "'\r@x"]
    assert safe["value"].tolist() == df["value"].tolist()
    assert list(spreadsheet_safe(df).columns) == list(df.columns)  # results keep their names


def test_validation_csvs_are_spreadsheet_safe(tmp_path):
    """A failing value of the data (a formula in a participant's site, a negative severity) is
    written to failure_cases.csv quoted, the number as a number."""
    from recurstudy.validate import main_validate

    people = pd.read_csv(REPO / "data/demo/participants.csv", dtype=str).head(20)
    people.loc[0, "arm"] = '=HYPERLINK("http://127.0.0.1:9/","x")'
    episodes = pd.read_csv(REPO / "data/demo/episodes.csv", dtype=str)
    episodes = episodes[episodes["participant_id"].isin(people["participant_id"])].copy()
    episodes.iloc[0, episodes.columns.get_loc("severity")] = "-3"
    people.to_csv(tmp_path / "participants.csv", index=False)
    episodes.to_csv(tmp_path / "episodes.csv", index=False)
    config = {"data": {"participants": "participants.csv", "episodes": "episodes.csv"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    code = main_validate(
        str(tmp_path / "config.yaml"), str(tmp_path / "out"), str(tmp_path / "clean"),
        base_dir=str(tmp_path),
    )  # fmt: skip
    assert code == 1
    text = (tmp_path / "out/failure_cases.csv").read_text(encoding="utf-8")
    cases = pd.read_csv(tmp_path / "out/failure_cases.csv", dtype=str, keep_default_na=False)
    values = set(cases["value"])
    assert '\'=HYPERLINK("http://127.0.0.1:9/","x")' in values, values
    assert "-3" in values
    assert not re.search(r"(^|,)=HYPERLINK", text, re.M)


def test_validation_report_md_escapes_config_and_data_text(tmp_path):
    """report.md of the validation: arm labels, file names and failing values from the config or
    the data show as text (no raw HTML, no image, a code span that cannot be closed early)."""
    from nbconvert.filters.markdown import markdown2html

    from recurstudy.validate import main_validate

    hostile = "<img src=x onerror=alert(1)> ![c](participants.csv)"
    people = pd.read_csv(REPO / "data/demo/participants.csv", dtype=str).head(20)
    people.loc[people["arm"] == "control", "arm"] = f"usual {hostile}"
    episodes = pd.read_csv(REPO / "data/demo/episodes.csv", dtype=str)
    episodes = episodes[episodes["participant_id"].isin(people["participant_id"])].copy()
    episodes.iloc[0, episodes.columns.get_loc("severity")] = "`` <script>alert(2)</script> ``"
    name = "p <b onmouseover=alert(3)>.csv"
    people.to_csv(tmp_path / name, index=False)
    episodes.to_csv(tmp_path / "episodes.csv", index=False)
    config = {
        "data": {"participants": name, "episodes": "episodes.csv"},
        "arms": {"control": f"usual {hostile}", "intervention": "intervention"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    main_validate(
        str(tmp_path / "config.yaml"), str(tmp_path / "out"), str(tmp_path / "clean"),
        base_dir=str(tmp_path),
    )  # fmt: skip
    md = (tmp_path / "out/report.md").read_text(encoding="utf-8")
    page = markdown2html(md)
    assert "<img" not in page and "<script" not in page and "<b " not in page, page
    assert "onerror=alert(1)" in page and "alert(2)" in page  # shown, as text


def test_data_paths_outside_the_run_folder_are_read_as_documented(tmp_path):
    """docs/hostile-inputs.md: data paths may be absolute or use `..` (tables are only read, and
    the manifest records them by hash); only `plan:` is confined to the run folder."""
    from recurstudy.plan import PlanError, plan_path
    from recurstudy.validate import main_validate

    run = tmp_path / "run"
    run.mkdir()
    config = {
        "data": {
            "participants": str(REPO / "data/demo/participants.csv"),
            "episodes": os.path.relpath(REPO / "data/demo/episodes.csv", run),
        }
    }
    assert config["data"]["episodes"].startswith("..")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    code = main_validate(
        str(run / "config.yaml"), str(run / "out"), str(run / "clean"), base_dir=str(run)
    )
    assert code == 0 and (run / "clean/participants.parquet").exists()
    with pytest.raises(PlanError, match="inside the run folder"):
        plan_path({"plan": "../plan.lock.json"}, run)
