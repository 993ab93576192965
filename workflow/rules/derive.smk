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
    conda:
        "../envs/recurstudy.yaml"
    params:
        dataset="first_episode",
        settings=SETTINGS["derive"],
        code=source_hash("recurstudy.derive"),
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
    conda:
        "../envs/recurstudy.yaml"
    params:
        dataset="counting_process",
        settings=SETTINGS["derive"],
        code=source_hash("recurstudy.derive"),
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
    conda:
        "../envs/recurstudy.yaml"
    params:
        dataset="counts",
        settings=SETTINGS["derive"],
        code=source_hash("recurstudy.derive"),
    script:
        "../scripts/derive.py"
