"""Tests for recurstudy.models.variance.sandwich (R's cluster-robust D'D and vcovHC's HC0/HC1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurstudy.models.coxph_engine import coxph_fit
from recurstudy.models.variance import cluster_sums, sandwich

FIX = Path(__file__).parent / "fixtures"


def _random(n: int = 50, p: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(p, p))
    bread = a @ a.T + p * np.eye(p)
    scores = rng.normal(size=(n, p))
    cluster = rng.integers(0, 12, n)
    return bread, scores, cluster


def test_unclustered_is_hc0():
    bread, scores, _ = _random()
    want = bread @ (scores.T @ scores) @ bread  # vcovHC(type = "HC0") for a GLM
    np.testing.assert_allclose(sandwich(bread, scores), want, rtol=1e-13)


def test_clustered_sums_dfbeta_within_clusters():
    bread, scores, cluster = _random()
    labels = np.array([f"id{c}" for c in cluster])
    D = np.array([(scores[cluster == c] @ bread).sum(axis=0) for c in np.unique(cluster)])
    want = D.T @ D
    np.testing.assert_allclose(sandwich(bread, scores, labels), want, rtol=1e-13)
    codes = np.unique(cluster, return_inverse=True)[1]
    got = sandwich(bread, scores, codes, n_clusters=int(codes.max()) + 1)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # one cluster per row is the unclustered sandwich
    np.testing.assert_allclose(
        sandwich(bread, scores, np.arange(50)), sandwich(bread, scores), rtol=1e-13
    )


def test_hc1_factors():
    bread, scores, cluster = _random(n=40, p=2)
    n, p, g = 40, 2, np.unique(cluster).size
    hc0 = sandwich(bread, scores)
    np.testing.assert_allclose(sandwich(bread, scores, hc1=True), hc0 * n / (n - p), rtol=1e-14)
    cl = sandwich(bread, scores, cluster)
    factor = g / (g - 1) * (n - 1) / (n - p)
    np.testing.assert_allclose(sandwich(bread, scores, cluster, hc1=True), cl * factor, rtol=1e-14)


def test_cluster_sums():
    a = np.arange(12.0).reshape(6, 2)
    got = cluster_sums(a, np.array([0, 1, 0, 2, 1, 0]), 4)
    np.testing.assert_array_equal(got, [[0 + 4 + 10, 1 + 5 + 11], [2 + 8, 3 + 9], [6, 7], [0, 0]])


def test_bad_shapes():
    bread, scores, cluster = _random()
    with pytest.raises(ValueError, match="bread"):
        sandwich(bread[:2, :2], scores)
    with pytest.raises(ValueError, match="cluster has length"):
        sandwich(bread, scores, cluster[:10])


def test_cox_robust_variance_is_the_sandwich_of_its_score_residuals():
    df = pd.read_csv(FIX / "cox" / "recurrent.csv")
    fit = coxph_fit(df[["arm", "x"]], df["stop"], df["event"], start=df["start"], cluster=df["id"])
    got = sandwich(fit.var, fit.score_residuals, df["id"])
    np.testing.assert_array_equal(got, fit.robust_var)
