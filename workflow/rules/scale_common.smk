# The settings and input functions of the bootstrap (cluster.smk) and per-site (sites.smk)
# rules, apart from the rules themselves (snakemake --lint).
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


from recurstudy.bootstrap import bootstrap_models

BOOT = config["bootstrap"]
BOOT_MODELS = [m for m in bootstrap_models(config) if m in SPECS]
BOOT_CHUNKS = -(-BOOT["replicates"] // BOOT["chunk_size"]) if BOOT_MODELS else 0
BOOT_CODE = source_hash("recurstudy.bootstrap")
CLUSTER_TARGETS = ["results/sensitivity/bootstrap.csv"] if BOOT_MODELS else []


def boot_data(wildcards):
    """The analysis datasets the bootstrapped model reads (resampled by participant)."""
    return model_inputs(type("W", (), {"name": wildcards.model}))


def boot_spec(wildcards):
    return spec_settings(SPECS[wildcards.model])


def boot_code(wildcards):
    return BOOT_CODE + model_source_hash(SPECS[wildcards.model].kind)
