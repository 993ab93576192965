# R's fits on the benchmark cohort's derived datasets, timed (reading not included).
# Usage: Rscript benchmarks/r_fits.R DIR [CONTROL INTERVENTION]   (DIR holds counting_process.csv
# and counts.csv written by benchmarks/run.py from the workflow's own Parquet files; the arm labels
# default to the simulated cohort's); prints one JSON object of seconds.
suppressPackageStartupMessages({
  library(survival)
  library(MASS)
})
args <- commandArgs(trailingOnly = TRUE)
dir <- args[[1]]
arms <- if (length(args) >= 3) args[2:3] else c("control", "intervention")
cp <- read.csv(file.path(dir, "counting_process.csv"), stringsAsFactors = FALSE)
counts <- read.csv(file.path(dir, "counts.csv"), stringsAsFactors = FALSE)
cp$arm <- factor(cp$arm, levels = arms)
counts$arm <- factor(counts$arm, levels = arms)
elapsed <- function(expr) unname(system.time(expr, gcFirst = TRUE)[["elapsed"]])
out <- list(
  rows_counting_process = nrow(cp),
  participants = nrow(counts),
  # Andersen-Gill with the participant-clustered (robust) variance.
  coxph_andersen_gill = elapsed(fit_ag <- coxph(Surv(start, stop, event) ~ arm + cluster(participant_id),
                                                data = cp, ties = "efron")),
  # PWP total time: strata by episode number.
  coxph_pwp_total = elapsed(fit_pwp <- coxph(Surv(start, stop, event) ~ arm + strata(episode) +
                                               cluster(participant_id), data = cp, ties = "efron")),
  glm_nb = elapsed(fit_nb <- glm.nb(n_episodes ~ arm + offset(log(exposure_days)), data = counts)),
  glm_poisson = elapsed(fit_p <- glm(n_episodes ~ arm + offset(log(exposure_days)), family = poisson,
                                     data = counts)),
  coef_andersen_gill = unname(coef(fit_ag)[1]),
  coef_pwp_total = unname(coef(fit_pwp)[1]),
  coef_glm_nb = unname(coef(fit_nb)[2]),
  coef_glm_poisson = unname(coef(fit_p)[2])
)
cat(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA), "\n")
