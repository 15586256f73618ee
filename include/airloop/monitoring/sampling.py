"""Seeded sampling of windows and references, and the bound on the error sampling adds to a score.

Heavy libraries (numpy, pandas) are imported inside the functions.
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["is_numeric", "sample_rows", "sampling_error", "stable_seed"]


def stable_seed(*parts: object) -> int:
    """A seed that is the same for the same parts in every process (CRC-32 of their text)."""
    return zlib.crc32("|".join(str(p) for p in parts).encode())


def sample_rows(frame: pd.DataFrame, size: int | None, seed: int) -> pd.DataFrame:
    """``frame``, or a seeded uniform sample of ``size`` of its rows when it has more (None: no limit)."""
    if size is None or len(frame) <= size:
        return frame
    return frame.sample(n=size, random_state=seed % 2**32)


def is_numeric(series: pd.Series) -> bool:
    """Whether a column is compared as numbers (booleans are categories)."""
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def sampling_error(sample: pd.Series, reference: pd.Series, method: str | None, *, population: int) -> float | None:
    """Bound on the expected |score(sample) - score(whole window)| for one column, or None.

    The score is a distance d(current, reference) and a metric, so the error is at most
    d(sample, window) (triangle inequality). For the normed Wasserstein distance,
    E W1(sample, window) <= fpc * J / sqrt(n) with J = integral of sqrt(F(1-F)) dx (Jensen on
    the empirical CDF; fpc the finite-population correction), divided by the reference std as
    Evidently does. For Jensen-Shannon distance over k categories the expected distance of a
    sample's shares is about sqrt((k-1) / (8n)) (chi-square approximation). Other methods
    (p-value tests, PSI, KL): None, no bound is given.
    """
    import numpy as np

    values = np.sort(np.asarray(sample.dropna(), dtype="float64")) if is_numeric(sample) else None
    n = int(sample.notna().sum())
    if n < 2 or method is None:
        return None
    fpc = math.sqrt(max(population - n, 0) / max(population - 1, 1))
    name = method.lower()
    if "wasserstein" in name and values is not None:
        cdf = np.arange(1, n) / n
        j = float(np.sum(np.sqrt(cdf * (1 - cdf)) * np.diff(values)))
        norm = max(float(np.std(np.asarray(reference, dtype="float64"))), 0.001)
        return fpc * j / math.sqrt(n) / norm
    if "jensen" in name:
        k = max(int(sample.nunique()), 2)
        return fpc * math.sqrt((k - 1) / (8 * n))
    return None
