# Claims: power by simulation in parallel chunks of replicates (the claim's, an MDE grid of
# simulated reductions, informative dropout; refits of the pain model for pain claims), then
# each claim evaluated.


wildcard_constraints:
    claim=r"[A-Za-z0-9_-]+",
    chunk=r"\d+",
    point=r"\d+",


rule power_design:
    input:
        participants="results/validated/participants.parquet",
        counts="results/analysis/counts.parquet",
    output:
        "results/power/design.json",
    log:
        "logs/power/design.log",
    conda:
        "../envs/recurstudy.yaml"
    params:
        settings=stage_settings(config, "power_design"),
        code=POWER_CODE,
    script:
        "../scripts/power_design.py"


rule power_chunk:
    input:
        "results/power/design.json",
    output:
        "results/power/{claim}/chunk_{chunk}.csv",
    log:
        "logs/power/{claim}/chunk_{chunk}.log",
    benchmark:
        "results/benchmarks/power/{claim}_{chunk}.tsv"
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        inputs=power_claim_inputs,
        seed=POWER["seed"],
        chunk_size=POWER["chunk_size"],
        replicates=POWER["replicates"],
        dropout_link=0.0,
        code=power_claim_code,
    script:
        "../scripts/power_chunk.py"


# The claim's replicates again (same seeds, so the comparison is paired) with a dropout hazard
# proportional to frailty ** informative_dropout_link.
rule power_informative:
    input:
        "results/power/design.json",
    output:
        "results/power/{claim}/informative_chunk_{chunk}.csv",
    log:
        "logs/power/{claim}/informative_chunk_{chunk}.log",
    benchmark:
        "results/benchmarks/power/{claim}_informative_{chunk}.tsv"
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        inputs=power_claim_inputs,
        seed=POWER["seed"],
        chunk_size=POWER["chunk_size"],
        replicates=POWER["replicates"],
        dropout_link=DROPOUT_LINK,
        code=power_claim_code,
    script:
        "../scripts/power_chunk.py"


# One point of the minimum-detectable-effect grid: grid_replicates replicates simulated under
# the reduction mde_grid[point], seeded apart from the claim's own replicates.
rule power_grid:
    input:
        "results/power/design.json",
    output:
        "results/power/{claim}/grid_{point}.csv",
    log:
        "logs/power/{claim}/grid_{point}.log",
    benchmark:
        "results/benchmarks/power/{claim}_grid_{point}.tsv"
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        inputs=power_grid_inputs,
        reduction=power_grid_reduction,
        seed=power_grid_seed,
        replicates=POWER["grid_replicates"],
        code=power_claim_code,
    script:
        "../scripts/power_grid.py"


# A pain claim: NRS trajectories from the fitted pain model under the claimed reduction, refitted.
rule power_pain_chunk:
    input:
        participants="results/validated/participants.parquet",
        fit=pain_model_fit,
    output:
        "results/power/{claim}/pain_chunk_{chunk}.csv",
    log:
        "logs/power/{claim}/pain_chunk_{chunk}.log",
    benchmark:
        "results/benchmarks/power/{claim}_pain_{chunk}.tsv"
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        inputs=pain_claim_inputs,
        seed=POWER["seed"],
        chunk_size=POWER["chunk_size"],
        replicates=POWER["pain_replicates"],
        code=power_claim_code,
    script:
        "../scripts/power_pain_chunk.py"


rule power_summary:
    input:
        unpack(power_summary_inputs),
    output:
        "results/power/{claim}.json",
    log:
        "logs/power/{claim}/summary.log",
    conda:
        "../envs/recurstudy.yaml"
    params:
        claimed=power_claimed,
        alpha=POWER["alpha"],
        kind=power_kind,
        dropout_link=power_summary_link,
        code=POWER_CODE,
    script:
        "../scripts/power_summary.py"


rule claims:
    input:
        estimates="results/estimates.csv",
        models=expand("results/models/{name}", name=list(SPECS)),
        power=expand("results/power/{claim}.json", claim=POWER_CLAIMS),
    output:
        csv="results/claims.csv",
        json="results/claims.json",
        agreement="results/sensitivity/agreement.csv",
    log:
        "logs/claims.log",
    conda:
        "../envs/recurstudy.yaml"
    params:
        settings=stage_settings(config, "claims"),
        code=source_hash("recurstudy.claims"),
    script:
        "../scripts/claims.py"


rule sensitivity:
    input:
        estimates="results/estimates.csv",
        counts="results/analysis/counts.parquet",
    output:
        forest="results/sensitivity/forest.csv",
        crude_vs_adjusted="results/sensitivity/crude_vs_adjusted.csv",
        e_value="results/sensitivity/e_value.csv",
        iptw="results/sensitivity/iptw.csv",
        balance="results/sensitivity/balance.csv",
    log:
        "logs/sensitivity.log",
    conda:
        "../envs/recurstudy.yaml"
    params:
        settings=stage_settings(config, "sensitivity"),
        code=source_hash("recurstudy.sensitivity"),
    script:
        "../scripts/sensitivity.py"


rule plan_status:
    input:
        plan_input,
    output:
        "results/plan_status.json",
    log:
        "logs/plan_status.log",
    conda:
        "../envs/recurstudy.yaml"
    params:
        settings=stage_settings(config, "plan"),
        code=source_hash("recurstudy.plan"),
    script:
        "../scripts/plan_status.py"


# Tipping point of informative dropout: episodes after each withdrawal imputed at delta times the
# control arm's rate, the claim's model refitted on each completed data set (recurstudy.tipping).
rule tipping_point:
    input:
        counting_process="results/analysis/counting_process.parquet",
        counts="results/analysis/counts.parquet",
        participants="results/validated/participants.parquet",
    output:
        "results/sensitivity/tipping_point.csv",
    log:
        "logs/tipping_point.log",
    benchmark:
        "results/benchmarks/tipping_point.tsv"
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        settings=stage_settings(config, "tipping_point"),
        code=source_hash(
            "recurstudy.tipping",
            *sorted({type(get_model(s.kind)).__module__ for s in SPECS.values()}),
        ),
    script:
        "../scripts/tipping_point.py"
