"""N-way K-shot episodes with explicit seeding (episode ``e`` is a pure function of (seed, e))."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoshot.errors import CryoshotError


@dataclass
class Episode:
    """Indices of one episode.

    Attributes
    ----------
    classes : (N,) the class labels drawn, in episode order (episode label j = classes[j])
    support : (N, K) item indices
    query : (N, Q) item indices, disjoint from ``support``
    """

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray

    @property
    def support_targets(self) -> np.ndarray:
        n, k = self.support.shape
        return np.repeat(np.arange(n), k)

    @property
    def query_targets(self) -> np.ndarray:
        n, q = self.query.shape
        return np.repeat(np.arange(n), q)


class EpisodeSampler:
    """Draw N-way K-shot Q-query episodes from labelled items.

    Parameters
    ----------
    labels : (M,) labels (ints or strings)
    way, shot, query : N, K, Q (Q may be 0)
    seed : episodes are reproducible from the seed alone

    Raises
    ------
    CryoshotError
        N or K of zero, a class with fewer than K + Q items (named, with its count),
        or N larger than the number of classes.
    """

    def __init__(self, labels: np.ndarray, way: int, shot: int, query: int, seed: int = 0):
        if way < 1:
            raise CryoshotError(f"--way must be at least 1, got {way}")
        if shot < 1:
            raise CryoshotError(f"--shot must be at least 1, got {shot}")
        if query < 0:
            raise CryoshotError(f"--query must be non-negative, got {query}")
        labels = np.asarray(labels)
        self.classes, counts = np.unique(labels, return_counts=True)
        short = [(c, n) for c, n in zip(self.classes, counts, strict=True) if n < shot + query]
        if short:
            desc = ", ".join(f"class {c} has {n}" for c, n in short[:5])
            raise CryoshotError(
                f"{way}-way {shot}-shot episodes with {query} queries need {shot + query} items per class; "
                f"{desc}. Label more examples, or lower --shot/--query"
            )
        if way > len(self.classes):
            raise CryoshotError(f"--way {way} is larger than the number of classes ({len(self.classes)})")
        self.by_class = {c: np.nonzero(labels == c)[0] for c in self.classes}
        self.way, self.shot, self.query, self.seed = way, shot, query, seed

    def episode(self, index: int) -> Episode:
        rng = np.random.default_rng([self.seed, int(index)])
        chosen = self.classes[rng.choice(len(self.classes), size=self.way, replace=False)]
        sup, qry = [], []
        for c in chosen:
            perm = rng.permutation(self.by_class[c])[: self.shot + self.query]
            sup.append(perm[: self.shot])
            qry.append(perm[self.shot :])
        return Episode(
            classes=chosen,
            support=np.stack(sup),
            query=np.stack(qry) if self.query else np.zeros((self.way, 0), int),
        )
