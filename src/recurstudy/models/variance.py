"""Robust (sandwich) variance from per-row scores, optionally clustered.

``sandwich(bread, scores, cluster)`` is D'D, where D holds the dfbeta residuals ``scores @ bread``
summed within clusters: R's ``coxph(..., cluster = id)`` robust variance, i.e. ``crossprod(
residuals(fit, type = "dfbeta", collapse = id, weighted = TRUE))`` (for a weighted Cox fit pass
the score residuals multiplied by the case weights), and, without clusters and with a symmetric
bread, ``sandwich::vcovHC(type = "HC0")`` of a GLM.  No small-sample factor unless asked
(``hc1=True``).

Written by hand because lifelines' robust variance ignores entry times on (start, stop] data and
loops over rows (quadratic), and the models here already have their bread (the inverse
information) and scores: this is two matrix products and a ``bincount`` per column.
"""

from __future__ import annotations

import numpy as np

from recurstudy.models.risksets import strata_codes

__all__ = ["cluster_sums", "sandwich"]


def cluster_sums(a: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Sum the rows of ``a`` (n, p) within cluster codes 0..k-1: (k, p)."""
    a = np.asarray(a, dtype=float)
    out = np.empty((k, a.shape[1]))
    for j in range(a.shape[1]):
        out[:, j] = np.bincount(codes, weights=a[:, j], minlength=k)
    return out


def sandwich(
    bread: np.ndarray,
    scores: np.ndarray,
    cluster=None,
    *,
    n_clusters: int | None = None,
    hc1: bool = False,
) -> np.ndarray:
    """Robust variance D'D with D = (scores @ bread) summed within clusters.

    Parameters
    ----------
    bread : (p, p) the model-based variance (inverse information), symmetric.
    scores : (n, p) per-row score contributions (for a Cox fit: score residuals, times the case
        weights if any).
    cluster : (n,) cluster labels; None means every row is its own cluster.  With
        ``n_clusters`` given, ``cluster`` holds integer codes 0..n_clusters-1 already.
    hc1 : multiply by the small-sample factor: n / (n - p) without clusters (``vcovHC`` HC1),
        G / (G - 1) * (n - 1) / (n - p) with G clusters (``sandwich::vcovCL`` HC1, Stata).
        R's coxph uses none.

    Returns the (p, p) variance.
    """
    bread = np.asarray(bread, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or bread.shape != (scores.shape[1], scores.shape[1]):
        raise ValueError(
            f"scores must be (n, p) and bread (p, p); got {scores.shape} and {bread.shape}"
        )
    n, p = scores.shape
    if cluster is None:
        # the sum of the rows' dfbeta outer products, as bread (S'S) bread (vcovHC's HC0)
        g = n
        v = bread @ (scores.T @ scores) @ bread
    else:
        if n_clusters is None:
            codes, g = strata_codes(cluster)
        else:
            codes, g = np.asarray(cluster, dtype=np.int64).reshape(-1), int(n_clusters)
        if codes.shape[0] != n:
            raise ValueError(f"cluster has length {codes.shape[0]} but scores has {n} rows")
        D = cluster_sums(scores @ bread, codes, g)
        v = D.T @ D
    if hc1:
        if cluster is None:
            v *= n / (n - p)
        else:
            v *= g / (g - 1) * (n - 1) / (n - p)
    return v
