# Per-site analyses: the primary rate or hazard claim's model fitted in each site, a
# DerSimonian-Laird random-effects meta-analysis of the site log ratios, and a site-stratified
# Andersen-Gill. The sites come from a checkpoint on the *validated* participants: they are known
# only after validation (with on_invalid: exclude a site can lose every participant, and the data
# may be Parquet), so reading the raw file at parse time could name sites that do not exist.
import json

from recurstudy.bootstrap import ratio_claim_models
from recurstudy.models import ModelSpec

SITE_MODELS = [m for m in ratio_claim_models(config) if m in SPECS][:1]
SITES_ON = bool(config["sites"]["enabled"]) and bool(SITE_MODELS)
SITE_TARGETS = (
    [
        "results/sites/effects.csv",
        "results/sites/meta.csv",
        "results/sites/stratified_ag.csv",
    ]
    if SITES_ON
    else []
)
SITES_CODE = source_hash("recurstudy.sites")


def site_model_inputs(wildcards=None):
    """The datasets of the per-site model, and the validated participants (their sites)."""
    inputs = model_inputs(type("W", (), {"name": SITE_MODELS[0]}))
    inputs["participants"] = "results/validated/participants.parquet"
    return inputs


def site_spec(wildcards=None):
    return spec_settings(SPECS[SITE_MODELS[0]])


def ag_spec(wildcards=None):
    """The configured Andersen-Gill model's spec (its ties option), or the default one."""
    ag = [s for s in SPECS.values() if s.kind == "andersen_gill" and s.formula == "arm"]
    spec = (
        ag[0]
        if ag
        else ModelSpec("andersen_gill", "andersen_gill", arms=config["arms"])
    )
    return spec_settings(spec)


def site_effect_files(wildcards):
    """One effect file per site listed by the checkpoint."""
    with open(checkpoints.site_list.get().output[0]) as fh:
        slugs = json.load(fh)
    return expand("results/sites/site/{site}.csv", site=sorted(slugs))


checkpoint site_list:
    input:
        "results/validated/participants.parquet",
    output:
        "results/sites/sites.json",
    log:
        "logs/sites/list.log",
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        code=SITES_CODE,
    script:
        "../scripts/site_list.py"


rule site_effect:
    input:
        unpack(site_model_inputs),
        sites="results/sites/sites.json",
    output:
        "results/sites/site/{site}.csv",
    log:
        "logs/sites/{site}.log",
    benchmark:
        "results/benchmarks/sites/{site}.tsv"
    wildcard_constraints:
        site=r"[A-Za-z0-9_.-]+",
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        spec=site_spec,
        min_cell=config["min_cell"],
        code=(
            SITES_CODE + model_source_hash(SPECS[SITE_MODELS[0]].kind)
            if SITE_MODELS
            else SITES_CODE
        ),
    script:
        "../scripts/site_effect.py"


rule site_meta:
    input:
        site_effect_files,
    output:
        effects="results/sites/effects.csv",
        meta="results/sites/meta.csv",
    log:
        "logs/sites/meta.log",
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        code=SITES_CODE,
    script:
        "../scripts/site_meta.py"


rule site_stratified_ag:
    input:
        participants="results/validated/participants.parquet",
        counting_process="results/analysis/counting_process.parquet",
    output:
        "results/sites/stratified_ag.csv",
    log:
        "logs/sites/stratified_ag.log",
    benchmark:
        "results/benchmarks/sites/stratified_ag.tsv"
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        spec=ag_spec,
        code=SITES_CODE,
    script:
        "../scripts/site_stratified_ag.py"
