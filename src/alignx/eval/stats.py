"""Paired bootstrap confidence intervals for differences between two models on the same items.

Every quality difference alignx reports is A - B on the *same* items (sentences, pairs, questions):
resampling item indices with replacement, the same indices for A and B, gives the sampling spread of
the difference (Koehn 2004, "Statistical significance tests for machine translation evaluation").
The interval is the percentile interval of the resampled differences. A difference is a claim only
when its interval excludes 0.

Items may come in strata (e.g. languages): each stratum is resampled within itself and the statistic
is the mean over strata of the per-stratum means, the "mean over languages" that tables report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

N_BOOT = 2000


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_mean_diff(
    a: Sequence[Sequence[float]] | Sequence[float],
    b: Sequence[Sequence[float]] | Sequence[float],
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Difference of means, A - B, with a paired bootstrap interval.

    a, b: per-item values of the two models on the same items, either one flat list or a list of
    strata (one list per language; A's and B's stratum k hold the same items in the same order).
    The statistic is the mean over strata of the per-stratum mean. Returns
    ``{"delta", "lo", "hi", "n", "strata", "level", "n_boot"}``.
    """
    sa, sb = _strata(a), _strata(b)
    if len(sa) != len(sb) or any(len(x) != len(y) for x, y in zip(sa, sb, strict=True)):
        raise ValueError("paired bootstrap: A and B must hold the same items (same strata and lengths)")
    if not sa or any(len(x) == 0 for x in sa):
        raise ValueError("paired bootstrap: no items")
    rng = np.random.default_rng(seed)
    diffs = [np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64) for x, y in zip(sa, sb, strict=True)]
    delta = float(np.mean([d.mean() for d in diffs]))
    samples = np.zeros(n_boot)
    for d in diffs:
        idx = rng.integers(0, len(d), size=(n_boot, len(d)))
        samples += d[idx].mean(axis=1)
    samples /= len(diffs)
    lo, hi = _interval(samples, level)
    return {"delta": delta, "lo": lo, "hi": hi, "n": sum(len(d) for d in diffs), "strata": len(diffs), "level": level, "n_boot": n_boot}


def paired_corpus_diff(
    stats_a: Sequence[Any],
    stats_b: Sequence[Any],
    score: Callable[[np.ndarray], float],
    relative: bool = False,
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Difference of a corpus-level metric computed from summed per-sentence statistics (chrF, perplexity).

    stats_a, stats_b: [N, K] sufficient statistics per sentence of A and B on the same N sentences, or a
    list of such arrays, one per stratum (e.g. translation direction). ``score(summed [K]) -> float``
    turns a stratum's summed statistics into its corpus score; the statistic is the mean over strata of
    score(A) - score(B), or with ``relative`` of score(A) / score(B) - 1. Returns the same dict as
    :func:`paired_mean_diff`.
    """
    sa = [np.asarray(x, dtype=np.float64) for x in _corpus_strata(stats_a)]
    sb = [np.asarray(x, dtype=np.float64) for x in _corpus_strata(stats_b)]
    if len(sa) != len(sb) or any(x.shape != y.shape or x.ndim != 2 or x.shape[0] == 0 for x, y in zip(sa, sb, strict=True)):
        raise ValueError("paired bootstrap: statistics must be equal non-empty [N, K] arrays per stratum for A and B")

    def diff(x: np.ndarray, y: np.ndarray) -> float:
        return _score_diff(score, x.sum(0), y.sum(0), relative)

    rng = np.random.default_rng(seed)
    delta = float(np.mean([diff(x, y) for x, y in zip(sa, sb, strict=True)]))
    samples = np.zeros(n_boot)
    for x, y in zip(sa, sb, strict=True):
        n = x.shape[0]
        for k in range(n_boot):
            idx = rng.integers(0, n, size=n)
            samples[k] += diff(x[idx], y[idx])
    samples /= len(sa)
    lo, hi = _interval(samples, level)
    return {"delta": delta, "lo": lo, "hi": hi, "n": sum(x.shape[0] for x in sa), "strata": len(sa), "level": level, "n_boot": n_boot}


def _score_diff(score: Callable[[np.ndarray], float], a: np.ndarray, b: np.ndarray, relative: bool) -> float:
    """score(A) - score(B) of summed statistics, or score(A) / score(B) - 1 with ``relative``."""
    sa, sb = score(a), score(b)
    return sa / sb - 1 if relative else sa - sb


def _corpus_strata(x: Any) -> list[Any]:
    """A single [N, K] array (rows of numbers) is one stratum; a list of such arrays is several."""
    x = list(x)
    if x and np.asarray(x[0], dtype=object).ndim == 2:
        return x
    return [x]


def seed_spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and range of one number over training seeds."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
        "min": float(v.min()),
        "max": float(v.max()),
        "seeds": len(v),
    }


def _strata(x: Any) -> list[list[float]]:
    x = list(x)
    if x and isinstance(x[0], list | tuple | np.ndarray):
        return [list(s) for s in x]
    return [x]


def hierarchical_mean_diff(
    a: Sequence[Sequence[Sequence[float]]],
    b: Sequence[Sequence[Sequence[float]]],
    clusters: Sequence[Sequence[Any]] | None = None,
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Difference of means, A - B, with a two-level (hierarchical) bootstrap interval: seeds, then items.

    a, b: ``[seed][stratum][item]`` values: each training seed of A (of B) on the same items, in the same strata
    (languages) and order; A and B hold the same items (paired). Each resample (1) draws A's seeds with replacement
    and, independently, B's, and averages each item over the drawn seeds; (2) draws items with replacement within
    each stratum, the same draw for A and B. With ``clusters`` (``[stratum][item]`` ids, e.g. the English sentence a
    pair of a multi-parallel set shares with the other languages' pairs), step (2) draws clusters instead, once for
    all strata, and an item counts as often as its cluster was drawn: items that share a sentence move together.
    The statistic is the mean over strata of the per-stratum mean, as :func:`paired_mean_diff`; with one seed per
    side and no clusters the two give the same distribution. Seed variance widens the interval, which pooling seeds
    before resampling items would hide. Returns ``{"delta", "lo", "hi", "n", "strata", "seeds_a", "seeds_b",
    "clusters", "level", "n_boot"}``.
    """
    A, B = _seed_arrays(a, "A"), _seed_arrays(b, "B")
    if len(A[0]) != len(B[0]) or any(x.shape[0] != y.shape[0] for x, y in zip(A[0], B[0], strict=True)):
        raise ValueError("hierarchical bootstrap: A and B must hold the same items (same strata and lengths)")
    n_strata = len(A[0])
    rng = np.random.default_rng(seed)
    # per stratum: [seeds, items] for A and B
    sa = _by_stratum(A)
    sb = _by_stratum(B)
    delta = float(np.mean([x.mean(0).mean() - y.mean(0).mean() for x, y in zip(sa, sb, strict=True)]))
    weights = _cluster_weights(clusters, [x.shape[1] for x in sa], n_boot, rng) if clusters is not None else None
    samples = np.zeros(n_boot)
    seeds_a, seeds_b = sa[0].shape[0], sb[0].shape[0]
    draw_a = rng.integers(0, seeds_a, size=(n_boot, seeds_a))
    draw_b = rng.integers(0, seeds_b, size=(n_boot, seeds_b))
    for k, (x, y) in enumerate(zip(sa, sb, strict=True)):
        d = x[draw_a].mean(1) - y[draw_b].mean(1)  # [n_boot, items]: per-item difference of the drawn seeds' means
        if weights is None:
            idx = rng.integers(0, d.shape[1], size=d.shape)
            samples += np.take_along_axis(d, idx, axis=1).mean(1)
        else:
            w = weights[k]  # [n_boot, items]: how often each item's cluster was drawn
            total = w.sum(1)
            samples += np.where(total > 0, (d * w).sum(1) / np.maximum(total, 1), d.mean(1))
    samples /= n_strata
    lo, hi = _interval(samples, level)
    return {"delta": delta, "lo": lo, "hi": hi, "n": sum(x.shape[1] for x in sa), "strata": n_strata, "seeds_a": seeds_a,
            "seeds_b": seeds_b, "clusters": None if clusters is None else len({c for s in clusters for c in s}),
            "level": level, "n_boot": n_boot}


def _seed_arrays(x: Sequence[Sequence[Sequence[float]]], name: str) -> list[list[np.ndarray]]:
    """``[seed][stratum] -> array`` of one side, checked: at least one seed, every seed the same strata and lengths."""
    seeds = [[np.asarray(s, dtype=np.float64) for s in seed] for seed in x]
    if not seeds or not seeds[0] or any(len(s) == 0 for s in seeds[0]):
        raise ValueError(f"hierarchical bootstrap: {name} has no seeds, strata or items")
    shape = [len(s) for s in seeds[0]]
    if any([len(s) for s in seed] != shape for seed in seeds):
        raise ValueError(f"hierarchical bootstrap: every seed of {name} must hold the same items")
    return seeds


def _by_stratum(seeds: list[list[np.ndarray]]) -> list[np.ndarray]:
    """``[seed][stratum] -> [items]`` as ``[stratum] -> [seeds, items]``."""
    return [np.stack([seed[k] for seed in seeds]) for k in range(len(seeds[0]))]


def _cluster_weights(clusters: Sequence[Sequence[Any]], sizes: list[int], n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per stratum ``[n_boot, items]``: how many times each item's cluster is drawn when the distinct clusters of all
    strata are resampled with replacement (one draw per resample, shared by every stratum)."""
    if len(clusters) != len(sizes) or any(len(c) != n for c, n in zip(clusters, sizes, strict=True)):
        raise ValueError("hierarchical bootstrap: clusters must give one id per item of every stratum")
    ids = sorted({c for s in clusters for c in s}, key=str)
    index = {c: i for i, c in enumerate(ids)}
    counts = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=n_boot)  # [n_boot, clusters]
    return [counts[:, [index[c] for c in s]].astype(np.float64) for s in clusters]


def hierarchical_corpus_diff(
    stats_a: Sequence[Sequence[Any]],
    stats_b: Sequence[Sequence[Any]],
    score: Callable[[np.ndarray], float],
    relative: bool = False,
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`paired_corpus_diff` with seeds resampled first, as :func:`hierarchical_mean_diff` does.

    stats_a, stats_b: ``[seed][stratum]`` -> [N, K] per-sentence sufficient statistics (chrF++ counts, NLL and
    tokens) of each training seed, on the same sentences. A resample draws A's seeds and B's with replacement, sums
    each sentence's statistics over the drawn seeds (the seed-pooled corpus), then draws sentences within each
    stratum (the same draw for A and B) and scores: the mean over strata of score(A) - score(B) (or the ratio - 1).
    The point estimate pools every seed once. Returns the dict of :func:`hierarchical_mean_diff` (clusters None).
    """
    A = [[np.asarray(x, dtype=np.float64) for x in seed_stats] for seed_stats in stats_a]
    B = [[np.asarray(x, dtype=np.float64) for x in seed_stats] for seed_stats in stats_b]
    if not A or not B or not A[0]:
        raise ValueError("hierarchical bootstrap: statistics need at least one seed and one stratum per side")
    shapes = [x.shape for x in A[0]]
    for side in (A, B):
        if any([x.shape for x in s] != shapes for s in side) or any(len(sh) != 2 or sh[0] == 0 for sh in shapes):
            raise ValueError("hierarchical bootstrap: statistics must be equal non-empty [N, K] arrays per stratum and seed")
    sa = [np.stack([s[k] for s in A]) for k in range(len(shapes))]  # [stratum] -> [seeds, N, K]
    sb = [np.stack([s[k] for s in B]) for k in range(len(shapes))]

    rng = np.random.default_rng(seed)
    delta = float(np.mean([_score_diff(score, x.sum((0, 1)), y.sum((0, 1)), relative) for x, y in zip(sa, sb, strict=True)]))
    seeds_a, seeds_b = len(A), len(B)
    samples = np.zeros(n_boot)
    for k in range(n_boot):
        da, db = rng.integers(0, seeds_a, size=seeds_a), rng.integers(0, seeds_b, size=seeds_b)
        for x, y in zip(sa, sb, strict=True):
            idx = rng.integers(0, x.shape[1], size=x.shape[1])
            samples[k] += _score_diff(score, x[da][:, idx].sum((0, 1)), y[db][:, idx].sum((0, 1)), relative)
    samples /= len(sa)
    lo, hi = _interval(samples, level)
    return {"delta": delta, "lo": lo, "hi": hi, "n": sum(sh[0] for sh in shapes), "strata": len(shapes), "seeds_a": seeds_a,
            "seeds_b": seeds_b, "clusters": None, "level": level, "n_boot": n_boot}
