"""Registry-scale benchmark: the whole workflow at 10k, 100k and 1M participants, against R.

For each size it simulates a cohort (about 3 episodes per participant, no pain scores), then:

1. times ``recurstudy simulate`` (wall and peak RSS of the process);
2. times Snakemake's start-up (``snakemake -n`` on the cohort's config: parse, config check, DAG);
3. runs the *core* targets in a fresh run folder (read + validate + derive + Andersen-Gill +
   negative binomial: the four jobs a claim on the rate needs) and times the whole command;
4. runs the rest of the pipeline (every default model but the pain model, claims, sensitivity,
   report, manifest; bootstrap off; power with 2 replicates, timed separately as "power aside");
5. reads every job's wall time and peak RSS from Snakemake's own ``benchmark:`` files;
6. fits Andersen-Gill, PWP, Poisson and the negative binomial in-process on the workflow's own
   Parquet datasets (fit only, as R's timings below are fit only): each model as the workflow
   fits it (``fit_spec``: for the Cox models with the proportional-hazards test, marginal means
   and tidy tables) and, for the Cox models, what R's ``coxph`` call computes (formula, design,
   fit, clustered variance: :func:`cox_as_r`), which is the comparison with R;
7. where ``Rscript`` is installed, times R's ``coxph`` (+ ``cluster``), ``glm.nb`` and ``glm`` on
   the same derived data (benchmarks/r_fits.R), in the same run.

``--cgd-intervals N`` adds the measurement the registry-scale issue was written from: R's
``survival::cgd`` trial (tests/fixtures/public/cgd, quoted as R's ``write.csv`` writes it, 8
covariates) replicated until its counting process has at least N intervals (1,000,181 intervals,
630k participants, for N = 1M), with its own config; it times the same core targets, their jobs
and R's two fits on the same data.

It prints a table (ours, R's, ratio) and the growth exponent of each stage between 100k and 1M
(log10 of the time ratio: 1.0 is linear), and writes everything as JSON.

Usage: .venv/bin/python benchmarks/run.py [--sizes 10000 100000 1000000] [--json FILE]
       [--workdir DIR] [--cores 2] [--no-r] [--cgd-intervals 1000000]
"""

from __future__ import annotations

import argparse
import compileall
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# As the workflow's jobs run (workflow/rules/common.smk), for the in-process fits below.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile")]

MODELS = [
    {"name": "km_first_episode", "kind": "kaplan_meier"},
    {"name": "cox_first_episode", "kind": "cox"},
    {"name": "andersen_gill", "kind": "andersen_gill"},
    {"name": "pwp_total_time", "kind": "pwp", "options": {"timescale": "total"}},
    {"name": "pwp_gap_time", "kind": "pwp", "options": {"timescale": "gap"}},
    {"name": "poisson_rate", "kind": "poisson"},
    {"name": "negbin_rate", "kind": "negbin"},
]
CORE_TARGETS = ["results/models/andersen_gill.csv", "results/models/negbin_rate.csv"]


def study_config(n: int) -> dict[str, Any]:
    """The benchmark study: the demo's design without pain scores; bootstrap off, power minimal."""
    return {
        "study": {"title": f"Benchmark cohort of {n} participants", "event": "pain episode"},
        "data": {"participants": "data/participants.csv", "episodes": "data/episodes.csv"},
        "arms": {"control": "control", "intervention": "intervention"},
        "covariates": {
            "age": "numeric",
            "prior_episodes": "numeric",
            "baseline_pain": "numeric",
            "sex": "categorical",
        },
        "adjust_for": ["age", "prior_episodes", "baseline_pain"],
        "models": MODELS,
        "claims": [
            {
                "id": "episodes_68",
                "statement": "Re-education cut pain episodes by 68% over six months.",
                "metric": "rate_reduction",
                "claimed": 0.68,
                "model": "negbin_rate",
            }
        ],
        "power": {
            "replicates": 2,
            "chunk_size": 2,
            "seed": 1,
            "mde_grid": [0.3, 0.5],
            "grid_replicates": 1,
        },
        "bootstrap": {"replicates": 0},
        "tipping_point": {"deltas": [1.0, 2.0], "imputations": 2},
    }


def timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """Run `cmd`; its wall seconds and the peak RSS (MB) of its largest process."""
    with log.open("ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark: {' '.join(cmd)} failed; see {log}")
    return wall, usage.ru_maxrss / 1024


def job_benchmarks(run: Path) -> dict[str, dict[str, float]]:
    """Every job's wall seconds and max RSS (MB) from Snakemake's benchmark files."""
    jobs = {}
    for tsv in sorted((run / "results" / "benchmarks").rglob("*.tsv")):
        with tsv.open() as fh:
            row = list(csv.DictReader(fh, delimiter="\t"))[-1]
        name = str(tsv.relative_to(run / "results" / "benchmarks").with_suffix(""))
        rss = row.get("max_rss", "NA")
        jobs[name] = {"s": float(row["s"]), "max_rss_mb": float(rss) if rss != "NA" else math.nan}
    return jobs


def fit_only(run: Path) -> dict[str, float]:
    """In-process fit seconds of the rate and counting-process models on the run's datasets."""
    import pandas as pd

    from recurstudy.models import fit_spec, model_specs

    config = study_config(0)
    data = {
        name: pd.read_parquet(run / "results" / "analysis" / f"{name}.parquet")
        for name in ("counting_process", "counts")
    }
    out = {}
    for spec in model_specs(config):
        if spec.name not in ("andersen_gill", "pwp_total_time", "poisson_rate", "negbin_rate"):
            continue
        t0 = time.perf_counter()
        result = fit_spec(spec, data)
        out[spec.name] = time.perf_counter() - t0
        assert bool(result.table["converged"].all()), f"{spec.name} did not converge"
    cp = data["counting_process"]
    for name, strata in (("andersen_gill", None), ("pwp_total_time", "episode")):
        t0 = time.perf_counter()
        cox_as_r(cp, strata)
        out[f"{name}_as_r"] = time.perf_counter() - t0
    return out


def cox_as_r(cp: Any, strata: str | None) -> Any:
    """What R's ``coxph(Surv(start, stop, event) ~ arm [+ strata(episode)] + cluster(id))``
    computes, through the same layers as the model: the design from the formula, the cluster
    codes, the fit with its robust (clustered) variance and robust score test. The model job
    adds the proportional-hazards test (R's cox.zph, a second pass over the risk sets), the
    marginal means and the tidy tables, which R's timing does not include."""
    import pandas as pd

    from recurstudy.models.base import design
    from recurstudy.models.coxph_engine import coxph_fit

    X, names = design("arm", cp, intercept=False)
    ids, _ = pd.factorize(cp["participant_id"])
    return coxph_fit(
        X.to_numpy(),
        cp["stop"].to_numpy(dtype=float),
        cp["event"].to_numpy(),
        start=cp["start"].to_numpy(dtype=float),
        strata=None if strata is None else cp[strata].to_numpy(),
        cluster=ids,
        names=names,
    )


def r_fits(run: Path, log: Path, arms: tuple[str, str] | None = None) -> dict[str, Any] | None:
    """R's fit seconds on the same derived data (None when Rscript is missing)."""
    if shutil.which("Rscript") is None:
        return None
    import pandas as pd

    tmp = run / "r"
    tmp.mkdir(exist_ok=True)
    for name in ("counting_process", "counts"):
        pd.read_parquet(run / "results" / "analysis" / f"{name}.parquet").to_csv(
            tmp / f"{name}.csv", index=False
        )
    out = subprocess.run(
        ["Rscript", str(ROOT / "benchmarks" / "r_fits.R"), str(tmp), *(arms or ())],
        capture_output=True,
        text=True,
        check=False,
    )
    log.write_text(out.stderr)
    if out.returncode != 0:
        sys.exit(f"benchmark: R failed; see {log}")
    return json.loads(out.stdout)


def bench_size(n: int, workdir: Path, cores: int, with_r: bool) -> dict[str, Any]:
    import yaml

    run = workdir / f"n{n}"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    log = run / "benchmark.log"
    (run / "config.yaml").write_text(yaml.safe_dump(study_config(n), sort_keys=False))
    simulate = [str(BIN / "recurstudy"), "simulate", "--n", str(n), "--seed", "1"]
    sim_s, sim_mb = timed([*simulate, "--rate-per-day", "0.025", "--out", "data"], cwd=run, log=log)
    (run / "data" / "pain_scores.csv").unlink(missing_ok=True)
    os.sync()  # the cohort on disk, as a user's is: its write-back does not run into the timings
    base = [*SNAKEMAKE, "--directory", str(run), "--configfile", str(run / "config.yaml")]
    startup_s, _ = timed([*base, "-n", "-q"], cwd=run, log=log)
    core_s, core_mb = timed([*base, "--cores", str(cores), *CORE_TARGETS], cwd=run, log=log)
    rest_s, rest_mb = timed([*base, "--cores", str(cores)], cwd=run, log=log)
    jobs = job_benchmarks(run)
    power_s = sum(v["s"] for k, v in jobs.items() if k.startswith("power"))
    import pandas as pd

    episodes = len(pd.read_parquet(run / "results" / "validated" / "episodes.parquet"))
    intervals = len(pd.read_parquet(run / "results" / "analysis" / "counting_process.parquet"))
    result = {
        "participants": n,
        "episodes": episodes,
        "intervals": intervals,
        "simulate": {"s": sim_s, "peak_mb": sim_mb},
        "snakemake_startup_s": startup_s,
        "core_end_to_end": {"s": core_s, "peak_mb": core_mb, "targets": CORE_TARGETS},
        "pipeline": {
            "s": core_s + rest_s,
            "peak_mb": max(core_mb, rest_mb),
            "power_job_s": power_s,
            "jobs": jobs,
        },
        "fit_only_s": fit_only(run),
        "r": r_fits(run, run / "r.log") if with_r else None,
    }
    shutil.rmtree(run / "data")  # the cohort is large; the results stay for inspection
    shutil.rmtree(run / "r", ignore_errors=True)
    return result


CGD = ROOT / "tests" / "fixtures" / "public" / "cgd"


def cgd_cohort(intervals: int, run: Path) -> tuple[int, int]:
    """R's cgd replicated (ids ``<copy>-<id>``) until the counting process has at least
    `intervals` rows; the copies and participants written to ``run/data``. Every field quoted,
    as R's ``write.csv`` writes it (the fixture's own form)."""
    import csv as csvmod

    import pandas as pd
    import yaml

    from recurstudy.derive import counting_process

    config = yaml.safe_load((CGD / "config.yaml").read_text())
    people = pd.read_csv(CGD / "participants.csv", dtype=str, keep_default_na=False)
    episodes = pd.read_csv(CGD / "episodes.csv", dtype=str, keep_default_na=False)
    typed_p = people.assign(
        enrolled_on=pd.to_datetime(people["enrolled_on"]),
        followup_end=pd.to_datetime(people["followup_end"]),
    )
    typed_e = episodes.assign(onset_on=pd.to_datetime(episodes["onset_on"]))
    per_copy = len(counting_process(typed_p, typed_e, config))
    copies = math.ceil(intervals / per_copy)
    data = run / "data"
    data.mkdir(parents=True)
    for name, frame in (("participants", people), ("episodes", episodes)):
        big = pd.concat([frame] * copies, ignore_index=True)
        copy = pd.Series(range(copies)).repeat(len(frame)).to_numpy().astype(str)
        big["participant_id"] = copy + "-" + big["participant_id"].to_numpy().astype(str)
        big.to_csv(data / f"{name}.csv", index=False, quoting=csvmod.QUOTE_ALL)
    config["data"] = {"participants": "data/participants.csv", "episodes": "data/episodes.csv"}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return copies, copies * per_copy


def bench_cgd(intervals: int, workdir: Path, cores: int, with_r: bool) -> dict[str, Any]:
    """The core targets on cgd replicated to `intervals` intervals (the issue's measurement)."""
    import yaml

    run = workdir / f"cgd{intervals}"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    log = run / "benchmark.log"
    copies, n_intervals = cgd_cohort(intervals, run)
    base = [*SNAKEMAKE, "--directory", str(run), "--configfile", str(run / "config.yaml")]
    startup_s, _ = timed([*base, "-n", "-q"], cwd=run, log=log)
    core_s, core_mb = timed([*base, "--cores", str(cores), *CORE_TARGETS], cwd=run, log=log)
    arms = yaml.safe_load((run / "config.yaml").read_text())["arms"]
    r = r_fits(run, run / "r.log", (arms["control"], arms["intervention"])) if with_r else None
    result = {
        "copies": copies,
        "participants": copies * 128,
        "intervals": n_intervals,
        "snakemake_startup_s": startup_s,
        "core_end_to_end": {"s": core_s, "peak_mb": core_mb, "targets": CORE_TARGETS},
        "jobs": job_benchmarks(run),
        "r": r,
        "r_coxph_plus_glm_nb_s": (r["coxph_andersen_gill"] + r["glm_nb"]) if r else None,
    }
    result["ratio_end_to_end"] = ratio(core_s, result["r_coxph_plus_glm_nb_s"])
    shutil.rmtree(run / "data")
    shutil.rmtree(run / "r", ignore_errors=True)
    return result


def ratio(ours: float, r: float | None) -> float | None:
    return None if r is None or r <= 0 else ours / r


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Our time against R's per size, and each stage's growth exponent from 100k to 1M."""
    rows = []
    for res in results:
        r = res["r"] or {}
        r_two = (r["coxph_andersen_gill"] + r["glm_nb"]) if r else None
        fit = res["fit_only_s"]
        rows.append(
            {
                "participants": res["participants"],
                "intervals": res["intervals"],
                "core_end_to_end_s": res["core_end_to_end"]["s"],
                "r_coxph_plus_glm_nb_s": r_two,
                "ratio_end_to_end": ratio(res["core_end_to_end"]["s"], r_two),
                "andersen_gill_fit_s": fit["andersen_gill_as_r"],
                "andersen_gill_model_s": fit["andersen_gill"],
                "r_coxph_andersen_gill_s": r.get("coxph_andersen_gill"),
                "ratio_andersen_gill": ratio(
                    fit["andersen_gill_as_r"], r.get("coxph_andersen_gill")
                ),
                "ratio_andersen_gill_model": ratio(
                    fit["andersen_gill"], r.get("coxph_andersen_gill")
                ),
                "pwp_total_fit_s": fit["pwp_total_time_as_r"],
                "pwp_total_model_s": fit["pwp_total_time"],
                "r_coxph_pwp_total_s": r.get("coxph_pwp_total"),
                "ratio_pwp_total": ratio(fit["pwp_total_time_as_r"], r.get("coxph_pwp_total")),
                "ratio_pwp_total_model": ratio(fit["pwp_total_time"], r.get("coxph_pwp_total")),
                "negbin_fit_s": fit["negbin_rate"],
                "r_glm_nb_s": r.get("glm_nb"),
                "ratio_negbin": ratio(fit["negbin_rate"], r.get("glm_nb")),
                "poisson_fit_s": fit["poisson_rate"],
                "r_glm_poisson_s": r.get("glm_poisson"),
                "ratio_poisson": ratio(fit["poisson_rate"], r.get("glm_poisson")),
                "pipeline_s": res["pipeline"]["s"],
                "pipeline_minus_power_s": res["pipeline"]["s"] - res["pipeline"]["power_job_s"],
                "pipeline_peak_mb": res["pipeline"]["peak_mb"],
                "simulate_s": res["simulate"]["s"],
                "simulate_peak_mb": res["simulate"]["peak_mb"],
            }
        )
    growth = {}
    by_n = {res["participants"]: res for res in results}
    if 100_000 in by_n and 1_000_000 in by_n:
        small, big = by_n[100_000], by_n[1_000_000]
        pairs = {
            "simulate": (small["simulate"]["s"], big["simulate"]["s"]),
            "core_end_to_end": (small["core_end_to_end"]["s"], big["core_end_to_end"]["s"]),
            "pipeline": (small["pipeline"]["s"], big["pipeline"]["s"]),
        }
        for job, v in big["pipeline"]["jobs"].items():
            if job in small["pipeline"]["jobs"]:
                pairs[f"job:{job}"] = (small["pipeline"]["jobs"][job]["s"], v["s"])
        for k, v in small["fit_only_s"].items():
            pairs[f"fit:{k}"] = (v, big["fit_only_s"][k])
        growth = {k: math.log10(b / a) for k, (a, b) in pairs.items() if a > 0 and b > 0}
    return {"rows": rows, "growth_exponent_100k_to_1m": growth}


def fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(summary: dict[str, Any]) -> None:
    head = (
        f"{'participants':>12} {'intervals':>10} {'e2e s':>7} {'R AG+NB s':>9} {'ratio':>6}"
        f" {'AG s':>6} {'model':>6} {'R AG s':>7} {'ratio':>6} {'PWP s':>6} {'model':>6}"
        f" {'R PWP s':>7} {'ratio':>6}"
        f" {'NB s':>6} {'R NB s':>7} {'ratio':>6} {'Pois s':>6} {'R glm s':>7} {'ratio':>6}"
        f" {'all-power s':>11} {'peak MB':>8} {'sim s':>6} {'sim MB':>7}"
    )
    print(head)
    print("(AG s, PWP s: what R's coxph computes; model: the workflow's fit with its PH test,")
    print(" marginal means and tables; ratios are ours / R's)")
    for r in summary["rows"]:
        print(
            f"{r['participants']:>12} {r['intervals']:>10} {fmt(r['core_end_to_end_s']):>7}"
            f" {fmt(r['r_coxph_plus_glm_nb_s']):>9} {fmt(r['ratio_end_to_end']):>6}"
            f" {fmt(r['andersen_gill_fit_s']):>6} {fmt(r['andersen_gill_model_s']):>6}"
            f" {fmt(r['r_coxph_andersen_gill_s']):>7}"
            f" {fmt(r['ratio_andersen_gill'], '.3f'):>6} {fmt(r['pwp_total_fit_s']):>6}"
            f" {fmt(r['pwp_total_model_s']):>6}"
            f" {fmt(r['r_coxph_pwp_total_s']):>7} {fmt(r['ratio_pwp_total'], '.3f'):>6}"
            f" {fmt(r['negbin_fit_s']):>6} {fmt(r['r_glm_nb_s']):>7} {fmt(r['ratio_negbin']):>6}"
            f" {fmt(r['poisson_fit_s']):>6} {fmt(r['r_glm_poisson_s']):>7}"
            f" {fmt(r['ratio_poisson']):>6} {fmt(r['pipeline_minus_power_s'], '.1f'):>11}"
            f" {fmt(r['pipeline_peak_mb'], '.0f'):>8} {fmt(r['simulate_s']):>6}"
            f" {fmt(r['simulate_peak_mb'], '.0f'):>7}"
        )
    if summary["growth_exponent_100k_to_1m"]:
        print("\ngrowth exponent 100k -> 1M (1.0 = linear):")
        for k, v in sorted(summary["growth_exponent_100k_to_1m"].items()):
            print(f"  {k:<45} {v:5.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recurstudy-benchmark"))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--no-r", action="store_true", help="skip R even where it is installed")
    parser.add_argument(
        "--cgd-intervals",
        type=int,
        default=0,
        help="also time R's cgd replicated to this many intervals (the issue's measurement)",
    )
    args = parser.parse_args(argv)
    # The package's bytecode, as an installed (non-editable) package has it: with
    # PYTHONDONTWRITEBYTECODE set (as on some CI machines) an editable checkout would otherwise
    # compile every module of recurstudy in every job, which no user's install does.
    compileall.compile_dir(ROOT / "src" / "recurstudy", quiet=1)
    results = [bench_size(n, args.workdir, args.cores, not args.no_r) for n in args.sizes]
    summary = summarise(results)
    print_table(summary)
    cgd = None
    if args.cgd_intervals:
        cgd = bench_cgd(args.cgd_intervals, args.workdir, args.cores, not args.no_r)
        print(
            f"\ncgd x {cgd['copies']} ({cgd['participants']} participants, {cgd['intervals']}"
            f" intervals): e2e {cgd['core_end_to_end']['s']:.2f} s, R coxph + glm.nb"
            f" {fmt(cgd['r_coxph_plus_glm_nb_s'])} s, ratio {fmt(cgd['ratio_end_to_end'])}"
        )
        for job, v in sorted(cgd["jobs"].items()):
            print(f"  {job:<30} {v['s']:6.2f} s {v['max_rss_mb']:8.0f} MB")
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "pythondontwritebytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
    }
    doc = {"machine": machine, "summary": summary, "sizes": results, "cgd_replicated": cgd}
    args.json.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"\nwritten {args.json}")


if __name__ == "__main__":
    main()
