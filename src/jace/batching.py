"""The one batching routine used by every inference path in jace.

Items are ordered longest first, grouped into batches bounded by a row count and a padded-token
budget, run through a callback, and the results are returned in input order. On an accelerator
out-of-memory error the batch is halved and retried, and later batches keep the smaller size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import Any, NamedTuple, Required, TypedDict, TypeVar, Unpack

import torch
from tqdm.auto import tqdm

from jace.device import empty_cache, is_out_of_memory

T = TypeVar("T")

#: Items at or above which a progress bar is shown when the caller does not say.
PROGRESS_BAR_MIN_ITEMS = 1000


def plan_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Group item indices into batches, longest items first.

    A batch holds at most ``batch_size`` items, and, when ``max_tokens`` is set, at most
    ``max_tokens`` padded tokens (``rows × longest row``). Longest-first means an OOM shows up
    on the first batch, not after an hour.

    Example:
        >>> plan_batches([3, 10, 5, 4], batch_size=2)
        [[1, 2], [3, 0]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}.")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = max(int(lengths[index]), 1)
        grown = max(longest, length)
        too_many = len(current) >= batch_size
        too_big = max_tokens is not None and grown * (len(current) + 1) > max_tokens
        if current and (too_many or too_big):
            batches.append(current)
            current, grown = [], length
        current.append(index)
        longest = grown
    if current:
        batches.append(current)
    return batches


class Batch(NamedTuple):
    """What one step of :func:`iter_batched` ran: its items, its padded tokens, and whether it was the last."""

    items: int
    tokens: int
    last: bool


def iter_batched(
    lengths: Sequence[int],
    forward: Callable[[list[int]], Sequence[T]],
    *,
    batch_size: int,
    max_tokens: int | None = None,
    device: torch.device | None = None,
    desc: str | None = None,
    show_progress_bar: bool | None = None,
) -> Generator[Batch, None, list[T]]:
    """:func:`run_batched` one batch at a time: yields a :class:`Batch` after each batch run, returns the results.

    After the batch marked ``last``, one more step runs no model, only what follows the batches.

    A caller that steps several of these in turn (``jace serve``'s worker) interleaves their
    batches, and one that stops stepping drops the rest of the work between two batches.

    Example:
        >>> steps = iter_batched([1, 3, 2], lambda idx: [i * 10 for i in idx], batch_size=2)
        >>> next(steps)  # the first batch: the two longest items, padded to 3 tokens
        Batch(items=2, tokens=6, last=False)
        >>> drain(steps)
        [0, 10, 20]
    """
    n = len(lengths)
    results: list[T | None] = [None] * n
    queue = deque(plan_batches(lengths, batch_size, max_tokens))
    limit = batch_size
    if show_progress_bar is None:
        show_progress_bar = n >= PROGRESS_BAR_MIN_ITEMS
    with tqdm(total=n, desc=desc, disable=not show_progress_bar, unit="item") as bar:
        while queue:
            indices = queue.popleft()
            if len(indices) > limit:
                queue.extendleft(reversed([indices[i : i + limit] for i in range(0, len(indices), limit)]))
                continue
            try:
                outputs = forward(indices)
            except Exception as error:
                if not is_out_of_memory(error) or len(indices) == 1:
                    raise
                if device is not None:
                    empty_cache(device)
                limit = max(1, len(indices) // 2)
                queue.appendleft(indices)
                continue
            if len(outputs) != len(indices):
                raise RuntimeError(f"batch callback returned {len(outputs)} results for {len(indices)} items")
            for index, output in zip(indices, outputs):
                results[index] = output
            bar.update(len(indices))
            yield Batch(len(indices), len(indices) * max(max(int(lengths[i]) for i in indices), 1), not queue)
    return results  # type: ignore[return-value]


def drain(steps: Generator[Any, None, T]) -> T:
    """Run a step generator (:func:`iter_batched` and the steps built on it) to the end; its return value.

    Example:
        >>> drain(iter_batched([2, 1], lambda idx: idx, batch_size=1))
        [0, 1]
    """
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


class BatchOptions(TypedDict, total=False):
    """The keyword options of :func:`iter_batched` and :func:`run_batched`."""

    batch_size: Required[int]
    max_tokens: int | None
    device: torch.device | None
    desc: str | None
    show_progress_bar: bool | None


def run_batched(lengths: Sequence[int], forward: Callable[[list[int]], Sequence[T]], **options: Unpack[BatchOptions]) -> list[T]:
    """Run ``forward`` over length-sorted batches of item indices; return results in input order.

    ``forward(indices)`` must return one result per index, in the order given. When it raises an
    out-of-memory error, the batch is split in half and retried, and the batch size stays halved.

    Example:
        >>> run_batched([1, 3, 2], lambda idx: [i * 10 for i in idx], batch_size=2)
        [0, 10, 20]
    """
    return drain(iter_batched(lengths, forward, **options))
