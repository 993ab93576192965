# Configuration: the demo config unless --configfile is given (then only that file counts, so
# that none of the demo's data paths leak into a user's study), validated against the schema.
import json
import os
import sys

from recurstudy.config import ConfigError, refuse_templating, validate_config
from recurstudy.contract import DATASETS
from recurstudy.models import get_model, model_specs
from recurstudy.plan import plan_path
from recurstudy.provenance import writable_problem
from recurstudy.power import (
    PAIN_METRICS,
    POWER_METRICS,
    grid_seed,
    pain_power_inputs,
    power_inputs,
)
from recurstudy.settings import (
    model_source_hash,
    source_hash,
    spec_settings,
    stage_settings,
)

# numpy asks the kernel for transparent huge pages on large arrays (madvise); with the kernel's
# default defrag=madvise, each first touch may stall on synchronous compaction: an Andersen-Gill
# job on 3.6M intervals took 4.6 s with it and 3.2 s without (benchmarks/run.py, 2 cores). The
# jobs inherit this; a value set by the user wins.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

# A run folder where nothing can be written (read-only mount, archived copy): one line, before
# Snakemake fails creating .snakemake/ with a PermissionError traceback. The working directory is
# the run folder (--directory) when this runs.
_unwritable = writable_problem(os.getcwd())
if _unwritable:
    sys.stderr.write(f"recurstudy: {_unwritable}\n")
    sys.exit(1)


def _refuse_templates(paths):
    """Stop with a short message when a config file is a yte template (__use_yte__)."""
    try:
        for path in paths:
            refuse_templating(path)
    except ConfigError as exc:
        sys.stderr.write(f"recurstudy: {exc}\n")
        sys.exit(1)


# Snakemake renders a --configfile before this file runs (snakemake.settings.types.ConfigSettings):
# a template there has already run when we see it, so the run stops here and the documentation
# says to check a config you did not write first (python -m recurstudy.config FILE,
# docs/hostile-inputs.md). The workflow's own config file is checked before it is loaded.
_refuse_templates(workflow.overwrite_configfiles or [])
if not config:
    if os.path.exists("config/config.yaml"):
        _refuse_templates(["config/config.yaml"])

    configfile: "config/config.yaml"


try:
    validate_config(config)
except (
    ConfigError
) as exc:  # the cause in a few lines: no traceback, no Snakemake noise after it
    sys.stderr.write(f"recurstudy: {exc}\n")
    sys.exit(1)

ANALYSIS = list(DATASETS)
CLEAN = ["participants", "episodes"] + (
    ["pain_scores"] if config["data"].get("pain_scores") else []
)


def data_inputs(wildcards=None):
    """The cohort tables named in the config that exist as regular files: a missing one, or a
    FIFO or device (which Snakemake must not open or checksum), is reported by the validation
    rule itself (with the other tables' problems), not as a Snakemake error.
    """
    return {n: config["data"][n] for n in CLEAN if os.path.isfile(config["data"][n])}


SPECS = {spec.name: spec for spec in model_specs(config)}

# What each job reads of the config reaches it as a parameter (so that Snakemake re-runs it when
# that part changes), with the hash of the package code it runs (recurstudy.settings).
SETTINGS = {
    stage: stage_settings(config, stage) for stage in ("validate", "derive", "report")
}


def plan_input(wildcards):
    """The locked plan file when there is one (its absence is a status, not an error)."""
    path = plan_path(config)
    return [str(path)] if path.exists() else []


def model_spec(wildcards):
    return spec_settings(SPECS[wildcards.name])


def model_code(wildcards):
    return model_source_hash(SPECS[wildcards.name].kind)


VALIDATED = {"participants", "episodes", "pain_scores"}


def model_inputs(wildcards):
    """The datasets the model's kind declares; a table the study lacks is simply not given."""
    model = get_model(SPECS[wildcards.name].kind)
    inputs = {}
    for d in model.datasets:
        if d in VALIDATED:
            if d in CLEAN:
                inputs[d] = f"results/validated/{d}.parquet"
        else:
            inputs[d] = f"results/analysis/{d}.parquet"
    return inputs


# The report stage (report.smk): its optional inputs and the manifest, written last.
SENSITIVITY = [
    f"results/sensitivity/{n}.csv"
    for n in (
        "forest",
        "crude_vs_adjusted",
        "e_value",
        "iptw",
        "balance",
        "tipping_point",
    )
]


def produced_by_workflow(path):
    """Whether some rule of this workflow writes `path` (optional inputs of the report)."""
    return any(str(o) == path for r in workflow.rules for o in r.output)


def report_inputs(wildcards):
    inputs = {
        "notebook": f"{workflow.basedir}/workflow/notebooks/report.py.ipynb",
        "flow": "results/validated/flow.json",
        "tables": expand("results/validated/{name}.parquet", name=CLEAN),
        "counts": "results/analysis/counts.parquet",
        "estimates": "results/estimates.csv",
        "models": expand("results/models/{name}.csv", name=list(SPECS)),
        "extras": expand("results/models/{name}", name=list(SPECS)),
        "claims": "results/claims.csv",
        "plan": "results/plan_status.json",
        "sensitivity": [p for p in SENSITIVITY if produced_by_workflow(p)]
        + ["results/sensitivity/agreement.csv"],
        # scale_common.smk (included later; this function runs when the DAG is built)
        "scale": CLUSTER_TARGETS + SITE_TARGETS,
    }
    if POWER_CLAIMS:
        inputs["power"] = ["results/power/design.json"] + expand(
            "results/power/{claim}.json", claim=POWER_CLAIMS
        )
    return inputs


def manifest_inputs(wildcards):
    """Every target of `rule all` (so that the manifest is written last) and the report; not
    the PDF, which the manifest leaves out (recurstudy.report.pdf)."""
    targets = [
        str(f)
        for f in rules.all.input
        if str(f) not in ("reports/manifest.json", "reports/report.pdf")
    ]
    return targets + ["reports/report.html"]


# Claims (claims.smk): power by simulation for rate, hazard and pain claims.
POWER = config["power"]
CLAIMS = {c["id"]: c for c in config["claims"]}
RATE_POWER_CLAIMS = [i for i, c in CLAIMS.items() if c["metric"] in POWER_METRICS]
PAIN_POWER_CLAIMS = [i for i, c in CLAIMS.items() if c["metric"] in PAIN_METRICS]
POWER_CLAIMS = (
    RATE_POWER_CLAIMS + PAIN_POWER_CLAIMS
)  # every claim with results/power/{id}.json
N_CHUNKS = -(-POWER["replicates"] // POWER["chunk_size"])
N_PAIN_CHUNKS = -(-POWER["pain_replicates"] // POWER["chunk_size"])
MDE_GRID = [float(r) for r in POWER["mde_grid"]]
DROPOUT_LINK = float(POWER["informative_dropout_link"])
POWER_CODE = source_hash("recurstudy.power")


def power_claim_inputs(wildcards):
    """What one claim's simulation depends on (claimed value, model, risk sets), as JSON."""
    return json.dumps(power_inputs(CLAIMS[wildcards.claim], config), sort_keys=True)


def power_grid_inputs(wildcards):
    """The claim's simulation inputs without the claimed value (the grid does not use it)."""
    inputs = power_inputs(CLAIMS[wildcards.claim], config)
    inputs.pop("claimed")
    return json.dumps(inputs, sort_keys=True)


def power_grid_reduction(wildcards):
    return MDE_GRID[int(wildcards.point)]


def power_grid_seed(wildcards):
    return grid_seed(POWER["seed"], int(wildcards.point))


def power_claim_code(wildcards):
    claim = CLAIMS[wildcards.claim]
    if claim["metric"] in PAIN_METRICS:
        kind = pain_power_inputs(claim, config)["spec"]["kind"]
    else:
        kind = power_inputs(claim, config)["spec"]["kind"]
    return POWER_CODE + model_source_hash(kind)


def pain_claim_inputs(wildcards):
    """What a pain claim's simulation depends on (claimed value, week, contrast, model)."""
    return json.dumps(
        pain_power_inputs(CLAIMS[wildcards.claim], config), sort_keys=True
    )


def pain_model_fit(wildcards):
    """The claim's fitted pain model (its extras: means by arm and week, variance components)."""
    return f"results/models/{pain_power_inputs(CLAIMS[wildcards.claim], config)['spec']['name']}"


def power_summary_inputs(wildcards):
    """A pain claim's replicates; or a rate or hazard claim's replicates, MDE grid points and
    (with informative_dropout_link other than 0) its informative-dropout replicates."""
    claim = wildcards.claim
    if claim in PAIN_POWER_CLAIMS:
        return {
            "reps": expand(
                f"results/power/{claim}/pain_chunk_{{c}}.csv", c=range(N_PAIN_CHUNKS)
            )
        }
    inputs = {
        "reps": expand(f"results/power/{claim}/chunk_{{c}}.csv", c=range(N_CHUNKS)),
        "grid": expand(f"results/power/{claim}/grid_{{p}}.csv", p=range(len(MDE_GRID))),
    }
    if DROPOUT_LINK != 0:
        inputs["informative"] = expand(
            f"results/power/{claim}/informative_chunk_{{c}}.csv", c=range(N_CHUNKS)
        )
    return inputs


def power_claimed(wildcards):
    return float(CLAIMS[wildcards.claim]["claimed"])


def power_kind(wildcards):
    return "pain" if wildcards.claim in PAIN_POWER_CLAIMS else "rate"


def power_summary_link(wildcards):
    """The informative-dropout link a rate or hazard claim's summary reports (None: pain)."""
    return None if wildcards.claim in PAIN_POWER_CLAIMS else DROPOUT_LINK
