# One job per configured model (adjusted variants included); then all estimates stacked.


rule fit_model:
    input:
        unpack(model_inputs),
    output:
        table="results/models/{name}.csv",
        extras=directory("results/models/{name}"),
    log:
        "logs/models/{name}.log",
    benchmark:
        "results/benchmarks/models/{name}.tsv"
    wildcard_constraints:
        name="|".join(SPECS),
    conda:
        "../envs/recurstudy.yaml"
    resources:
        mem_mb=4000,
    params:
        spec=model_spec,
        code=model_code,
    script:
        "../scripts/fit_model.py"


rule estimates:
    input:
        expand("results/models/{name}.csv", name=list(SPECS)),
    output:
        "results/estimates.csv",
    log:
        "logs/estimates.log",
    conda:
        "../envs/recurstudy.yaml"
    params:
        code=source_hash("recurstudy.models"),
    script:
        "../scripts/estimates.py"
