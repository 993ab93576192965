# Analysis datasets; the functions live in recurstudy.derive. One job writes all three: the
# validated tables are read once and the counting process (which `counts` sums) is built once.
# Three jobs re-read the Parquet files and rebuilt the counting process twice, which was the
# largest cost of the workflow at 1M participants (benchmarks/run.py).


rule derive:
    input:
        participants="results/validated/participants.parquet",
        episodes="results/validated/episodes.parquet",
    output:
        first_episode="results/analysis/first_episode.parquet",
        counting_process="results/analysis/counting_process.parquet",
        counts="results/analysis/counts.parquet",
    log:
        "logs/derive/derive.log",
    benchmark:
        "results/benchmarks/derive.tsv"
    conda:
        "../envs/recurstudy.yaml"
    resources:
        mem_mb=8000,
    params:
        settings=SETTINGS["derive"],
        code=source_hash("recurstudy.derive"),
    script:
        "../scripts/derive.py"
