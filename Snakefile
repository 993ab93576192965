# recurstudy workflow: validate -> derive -> models -> claims -> report.
# Run `snakemake --cores 2` here (demo cohort), or on your own data:
#   snakemake -s /path/to/Snakefile --directory RUN --configfile RUN/config.yaml --cores 2


include: "workflow/rules/common.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/derive.smk"
include: "workflow/rules/models.smk"
