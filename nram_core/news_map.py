"""The news map: news vectors projected to 2-D by PCA, for drawing a catalog as a scatter plot."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

MAP_POINTS = 20_000  # news drawn at most; a larger catalog is drawn as a seeded sample


@dataclass(frozen=True)
class NewsMap:
    """A PCA projection of news vectors and the news rows it draws."""

    rows: np.ndarray  # [n] news rows drawn (1-based: row 0 is padding)
    xy: np.ndarray  # [n,2] their places
    share: np.ndarray  # [2] each component's share of the variance
    mean: np.ndarray  # [D]
    components: np.ndarray  # [2,D]

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Places of other vectors (news outside the drawn sample) under the same projection."""
        return (np.asarray(vectors, dtype=np.float64) - self.mean) @ self.components.T  # [m,D] -> [m,2]

    def with_news(self, rows: np.ndarray, vectors: np.ndarray) -> NewsMap:
        """This map with news ``rows`` (their vectors ``[m,D]``) drawn too: those outside the sample are
        added, placed by the same projection; those already drawn stay as they are.

        >>> m = news_map(np.eye(3) * 2.0, max_points=2, seed=0)
        >>> both = m.with_news(np.array([1, 2, 3]), np.eye(3) * 2.0)
        >>> added = both.rows[2]  # the news the sample left out, placed by the same projection
        >>> sorted(both.rows.tolist()), len(m.rows), bool(np.allclose(both.xy[2], m.project(2 * np.eye(3)[added - 1])))
        ([1, 2, 3], 2, True)
        """
        rows = np.asarray(rows, dtype=np.int64)
        new = ~np.isin(rows, self.rows)
        return replace(self, rows=np.concatenate([self.rows, rows[new]]),
                       xy=np.concatenate([self.xy, self.project(np.asarray(vectors)[new])]))  # [n+m',2]


def news_map(vectors: np.ndarray, *, max_points: int = MAP_POINTS, seed: int = 0) -> NewsMap:
    """PCA of news vectors ``[N,D]`` (row ``i`` is news row ``i + 1``) to 2-D, fitted on and drawn
    for a seeded sample of at most ``max_points`` news (all of them when there are fewer).

    >>> m = news_map(np.eye(4)[[0, 0, 1, 2]] * 5.0, max_points=10)
    >>> m.rows.tolist(), m.xy.shape, bool(m.share.sum() <= 1.0), m.project(np.zeros((1, 4))).shape
    ([1, 2, 3, 4], (4, 2), True, (1, 2))
    >>> sample = news_map(np.random.default_rng(1).normal(size=(50, 3)), max_points=20, seed=7)
    >>> len(sample.rows), bool(np.all(np.diff(sample.rows) > 0))
    (20, True)
    >>> bool(np.allclose(sample.project(np.random.default_rng(1).normal(size=(50, 3))[sample.rows - 1]), sample.xy))
    True
    """
    n, dim = vectors.shape
    rows = np.arange(n)
    if n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
    sample = vectors[rows].astype(np.float64)  # [n',D]
    mean = sample.mean(axis=0)  # [D]
    _, singular, basis = np.linalg.svd(sample - mean, full_matrices=False)  # basis [min(n',D),D]
    components = np.zeros((2, dim))
    components[: min(2, len(basis))] = basis[:2]
    total = float((singular ** 2).sum()) or 1.0
    share = np.zeros(2)
    share[: min(2, len(singular))] = (singular[:2] ** 2) / total
    return NewsMap(rows=rows + 1, xy=(sample - mean) @ components.T, share=share, mean=mean,
                   components=components)  # xy: [n',D] -> [n',2]
