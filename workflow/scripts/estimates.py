"""Snakemake entry point: stack every model's tidy table into results/estimates.csv."""

from recurstudy.models import stack_estimates, write_csv

snakemake = globals()["snakemake"]
write_csv(stack_estimates(list(snakemake.input)), snakemake.output[0])
