# One job per configured model (adjusted variants included); then all estimates stacked.
from recurstudy.models import get_model, model_specs

SPECS = {spec.name: spec for spec in model_specs(config)}
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
    resources:
        mem_mb=4000,
    script:
        "../scripts/fit_model.py"


rule estimates:
    input:
        expand("results/models/{name}.csv", name=list(SPECS)),
    output:
        "results/estimates.csv",
    log:
        "logs/estimates.log",
    script:
        "../scripts/estimates.py"
