# Validate the cohort tables. The reports are the rule's logs, so Snakemake keeps them when
# validation fails (it deletes the outputs of a failed job); the clean tables exist only when
# the cohort is valid (or, with on_invalid: exclude, after the exclusions are listed).


rule validate:
    input:
        unpack(data_inputs),
    output:
        tables=expand("results/validated/{name}.parquet", name=CLEAN),
        flow="results/validated/flow.json",
    log:
        report_md="results/validation/report.md",
        report_json="results/validation/report.json",
        failures="results/validation/failure_cases.csv",
        excluded="results/validation/excluded.csv",
    benchmark:
        "results/benchmarks/validate.tsv"
    conda:
        "../envs/recurstudy.yaml"
    resources:
        mem_mb=4000,
    params:
        settings=SETTINGS["validate"],
        code=source_hash("recurstudy.validate"),
    script:
        "../scripts/validate.py"
