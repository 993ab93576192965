# Per-site analyses: the primary rate or hazard claim's model fitted in each site, a
# DerSimonian-Laird random-effects meta-analysis of the site log ratios, and a site-stratified
# Andersen-Gill. The sites come from a checkpoint on the *validated* participants: they are known
# only after validation (with on_invalid: exclude a site can lose every participant, and the data
# may be Parquet), so reading the raw file at parse time could name sites that do not exist.


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
