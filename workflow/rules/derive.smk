# Analysis datasets, one rule each; the functions live in recurstudy.derive.


rule derive_first_episode:
    input:
        participants="results/validated/participants.parquet",
        episodes="results/validated/episodes.parquet",
    output:
        "results/analysis/first_episode.parquet",
    log:
        "logs/derive/first_episode.log",
    benchmark:
        "results/benchmarks/derive_first_episode.tsv"
    params:
        dataset="first_episode",
    conda:
        "../envs/recurstudy.yaml"
    script:
        "../scripts/derive.py"


rule derive_counting_process:
    input:
        participants="results/validated/participants.parquet",
        episodes="results/validated/episodes.parquet",
    output:
        "results/analysis/counting_process.parquet",
    log:
        "logs/derive/counting_process.log",
    benchmark:
        "results/benchmarks/derive_counting_process.tsv"
    params:
        dataset="counting_process",
    conda:
        "../envs/recurstudy.yaml"
    script:
        "../scripts/derive.py"


rule derive_counts:
    input:
        participants="results/validated/participants.parquet",
        episodes="results/validated/episodes.parquet",
    output:
        "results/analysis/counts.parquet",
    log:
        "logs/derive/counts.log",
    benchmark:
        "results/benchmarks/derive_counts.tsv"
    params:
        dataset="counts",
    conda:
        "../envs/recurstudy.yaml"
    script:
        "../scripts/derive.py"
