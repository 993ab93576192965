# Participant (cluster) bootstrap of each rate or hazard claim's model: chunks of seeded
# replicates as parallel jobs (each declares threads, memory and runtime, so a cluster executor
# can place it), a summary per model, and results/sensitivity/bootstrap.csv. Off with
# bootstrap.replicates: 0. recurstudy.bootstrap does the work; see docs/cluster.md.


rule bootstrap_chunk:
    input:
        unpack(boot_data),
    output:
        "results/bootstrap/{model}/chunk_{chunk}.csv",
    log:
        "logs/bootstrap/{model}/chunk_{chunk}.log",
    benchmark:
        "results/benchmarks/bootstrap/{model}_{chunk}.tsv"
    wildcard_constraints:
        chunk=r"\d+",
        model="|".join(BOOT_MODELS) or "(?!)",
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=15,
    params:
        spec=boot_spec,
        seed=BOOT["seed"],
        chunk_size=BOOT["chunk_size"],
        replicates=BOOT["replicates"],
        code=boot_code,
    script:
        "../scripts/bootstrap_chunk.py"


rule bootstrap_summary:
    input:
        unpack(boot_data),
        chunks=expand(
            "results/bootstrap/{{model}}/chunk_{chunk}.csv", chunk=range(BOOT_CHUNKS)
        ),
        table="results/models/{model}.csv",
    output:
        "results/bootstrap/{model}.csv",
    log:
        "logs/bootstrap/{model}/summary.log",
    benchmark:
        "results/benchmarks/bootstrap/{model}_summary.tsv"
    wildcard_constraints:
        model="|".join(BOOT_MODELS) or "(?!)",
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=15,
    params:
        spec=boot_spec,
        seed=BOOT["seed"],
        bca=BOOT["bca"],
        code=boot_code,
    script:
        "../scripts/bootstrap_summary.py"


rule bootstrap_table:
    input:
        expand("results/bootstrap/{model}.csv", model=BOOT_MODELS),
    output:
        "results/sensitivity/bootstrap.csv",
    log:
        "logs/bootstrap/table.log",
    conda:
        "../envs/recurstudy.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        code=BOOT_CODE,
    script:
        "../scripts/bootstrap_table.py"
