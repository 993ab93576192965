# Claims: power by simulation in parallel chunks of replicates, then each claim evaluated.
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
    wildcard_constraints:
        chunk=r"\d+",
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
        code=power_claim_code,
    script:
        "../scripts/power_chunk.py"


rule power_summary:
    input:
        expand("results/power/{{claim}}/chunk_{chunk}.csv", chunk=range(N_CHUNKS)),
    output:
        "results/power/{claim}.json",
    log:
        "logs/power/{claim}/summary.log",
    conda:
        "../envs/recurstudy.yaml"
    params:
        claimed=power_claimed,
        alpha=POWER["alpha"],
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
