"""Which sentences a PruningEncoder keeps, given their keep probabilities: one rule for ``prune()``,
``jace prune``, the server and ``jace evaluate-pruner``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def keep_masks(
    probabilities: Sequence[Sequence[float]],
    threshold: float,
    *,
    scores: Sequence[float | None] | None = None,
    keep_top_context: bool = False,
) -> list[list[bool]]:
    """Keep masks for the contexts of one query: a sentence is kept when its probability passes ``threshold``.

    With ``keep_top_context``, the context ranked first (highest rerank score; highest sentence
    probability when there are no rerank scores) keeps at least its most probable sentence, so the
    passage the model itself ranks best is never emptied. Other contexts follow the threshold alone.

    Example:
        >>> keep_masks([[0.02, 0.04], [0.01, 0.3]], 0.5, scores=[0.9, 0.2], keep_top_context=True)
        [[False, True], [False, False]]
    """
    if scores is not None and len(scores) != len(probabilities):
        raise ValueError(f"keep_masks: {len(scores)} rerank score(s) for {len(probabilities)} context(s); give one per context.")
    masks = [[p > threshold for p in probs] for probs in probabilities]
    if not keep_top_context or not masks:
        return masks
    if scores is not None and all(s is not None and math.isfinite(s) for s in scores):
        top = int(np.argmax(np.asarray(scores, dtype=float)))
    else:
        top = int(np.argmax([max(probs) if len(probs) else -math.inf for probs in probabilities]))
    if probabilities[top] and not any(masks[top]):
        masks[top][int(np.argmax(probabilities[top]))] = True
    return masks
