"""Extractive summaries by K-Means over sentence embeddings (the seed's 意味クラスタリング要約).

The history that no longer fits the context is cut into segments of
SEGMENT_TURNS turns, counted from the start of the conversation. Each segment
is summarised once, by the seed's rule applied to its sentences:

    k = clamp(ceil(sentences / cluster_divisor), min_clusters, max_clusters)

K-Means (fixed seed and n_init, so the same sentences always give the same
summary) groups the segment's sentences into k clusters, and the sentence
nearest each centre stands for its cluster. A segment never changes once the
conversation has moved past it, so its summary is computed once and kept
(incremental: a new turn never re-clusters what earlier turns summarised).
When all segments together offer more than max_clusters sentences, the
representatives themselves are clustered once more down to max_clusters: the
summary stays bounded however long the conversation grows. Sentences are
always given in their original order.
"""

from __future__ import annotations

import dataclasses
import math

SEGMENT_TURNS = 8
KMEANS_SEED = 0
KMEANS_N_INIT = 4


@dataclasses.dataclass(frozen=True)
class ClusterRule:
    divisor: int
    minimum: int
    maximum: int

    def clusters(self, sentences: int) -> int:
        """The seed's k for SENTENCES sentences (never more clusters than sentences)."""
        if sentences <= 0:
            return 0
        k = min(max(math.ceil(sentences / self.divisor), self.minimum), self.maximum)
        return min(k, sentences)


def representatives(embeddings, k: int) -> list[int]:
    """Indices (ascending) of the sentence nearest each of K K-Means centres of EMBEDDINGS (n x d)."""
    import numpy as np

    count = len(embeddings)
    if k <= 0 or count == 0:
        return []
    if k >= count:
        return list(range(count))
    from sklearn.cluster import KMeans

    points = np.asarray(embeddings, dtype=np.float32)
    model = KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=KMEANS_SEED).fit(points)
    chosen = set()
    for centre in model.cluster_centers_:
        distances = np.linalg.norm(points - centre, axis=1)
        # Nearest sentence not already chosen (two centres may share a nearest point).
        for index in np.argsort(distances, kind="stable"):
            if int(index) not in chosen:
                chosen.add(int(index))
                break
    return sorted(chosen)


def segment_bounds(overflow_turns: int) -> list[tuple[int, int]]:
    """[start, end) turn indices of the segments the first OVERFLOW_TURNS turns are cut into."""
    return [(start, min(start + SEGMENT_TURNS, overflow_turns))
            for start in range(0, overflow_turns, SEGMENT_TURNS)]
