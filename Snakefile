# recurstudy workflow: validate -> derive -> models -> claims -> report.
# Run `snakemake --cores 2` here (demo cohort), or on your own data:
#   snakemake -s /path/to/Snakefile --directory RUN --configfile RUN/config.yaml --cores 2


include: "workflow/rules/common.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/derive.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/scale_common.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/sites.smk"


# The default target lives here: Snakemake only honours a default target of the main Snakefile.
rule all:
    input:
        expand("results/analysis/{name}.parquet", name=ANALYSIS),
        "results/estimates.csv",
        "results/claims.csv",
        "results/plan_status.json",
        "results/sensitivity/forest.csv",
        "results/sensitivity/tipping_point.csv",
        "reports/report.html",
        PDF_TARGETS,
        "reports/manifest.json",
        CLUSTER_TARGETS,
        SITE_TARGETS,
