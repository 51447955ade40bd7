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
        a, b = score(x.sum(0)), score(y.sum(0))
        return a / b - 1 if relative else a - b

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
