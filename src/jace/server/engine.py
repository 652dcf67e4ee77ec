"""The model side of ``jace serve``: one worker thread that runs every request's batches in turn.

A request is tokenized once, in its own thread (with a copy of the tokenizer that no other thread
holds meanwhile: :class:`TokenizerPool`), and becomes a job on one queue. The worker
merges small jobs that want the same kind of answer into one group (up to one batch of pairs), and
runs each group as a step generator of jace's one batching routine (length-sorted, under a
padded-token budget). Groups take turns, one batch each, so a one-text request behind a
thousand-text request waits about one batch, not the whole big request; and a job whose request
timed out or whose client went away is dropped between two batches, freeing the model. Answers go
back to each request's future, in its own order.
"""

from __future__ import annotations

import asyncio
import copy
import ctypes
import ctypes.util
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from jace.batching import Batch
from jace.pruning.encoder import PruningEncoder, PruningPlan, PruningResult
from jace.scoring import RerankerCrossEncoderClient

Pair = tuple[str, str]


class TooLong(ValueError):
    """A pair is over the model's token limit and the request did not allow truncation."""

    def __init__(self, index: int, length: int, count: int, limit: int) -> None:
        super().__init__(f"pair {index} is over {limit} tokens")
        self.index, self.length, self.count, self.limit = index, length, count, limit


class Disconnected(Exception):
    """The client went away before its answer was ready; its remaining batches were dropped."""


class TokenizerPool:
    """Copies of one tokenizer, each lent to one thread at a time.

    Two threads calling one fast (Rust) tokenizer with different truncation settings raise
    "Already borrowed", so request threads never share one: each borrows a copy, made once when
    the server loads (copying an XLM-R tokenizer takes about a second, too long for a request).
    A slow (pure Python) tokenizer has no such state; its one instance is lent in turn.

    Example:
        >>> pool = TokenizerPool(tokenizer, size=2)  # doctest: +SKIP
        >>> with pool.borrow() as copy_of_it:  # doctest: +SKIP
        ...     copy_of_it("query", "passage")
    """

    def __init__(self, tokenizer: Any, size: int) -> None:
        fast = getattr(tokenizer, "is_fast", False)
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(max(size, 1) if fast else 1):
            self._free.put(copy.deepcopy(tokenizer) if fast else tokenizer)

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        tokenizer = self._free.get()
        try:
            yield tokenizer
        finally:
            self._free.put(tokenizer)


@dataclass
class Encoded:
    """A request's texts, tokenized once in the request's thread; the worker runs these very ids."""

    kind: str  # "score" or "prune"
    payload: Any  # the reranker's features, or a PruningPlan
    size: int  # pairs, or contexts
    tokens: int  # tokens the model sees (after truncation)


@dataclass
class _Job:
    encoded: Encoded
    key: tuple  # options; jobs with the same kind and key may share a model call
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    deadline: float | None  # time.monotonic() after which the answer is no use
    cancelled: bool = False

    def dropped(self, now: float) -> bool:
        return self.cancelled or (self.deadline is not None and now > self.deadline)


@dataclass
class _Group:
    jobs: list[_Job]
    steps: Generator[Batch, None, list[Any]]
    split: Callable[[list[Any]], list[Any]] = field(repr=False)  # the group's answer -> one answer per job


class Engine:
    """Holds the models and the batching worker; ``await engine.score(...)`` from request handlers.

    ``reranker`` scores pairs (``/rerank``, ``/score``); ``pruner`` prunes contexts (``/prune``) and,
    when there is no reranker, also scores pairs (a PruningEncoder reranks in the same pass).

    Example:
        >>> engine = Engine(reranker=RerankerCrossEncoderClient("model"))  # doctest: +SKIP
        >>> engine.start(); await engine.score([("q", "p")])  # doctest: +SKIP
    """

    def __init__(
        self,
        reranker: RerankerCrossEncoderClient | None = None,
        pruner: PruningEncoder | None = None,
        *,
        batch_size: int = 32,
        on_batch: Callable[[str, int, int], None] | None = None,
        tokenizer_copies: int | None = None,
    ) -> None:
        if reranker is None and pruner is None:
            raise ValueError("an Engine needs a reranker, a pruner, or both.")
        self.reranker, self.pruner = reranker, pruner
        self.batch_size = batch_size
        self.on_batch = on_batch or (lambda kind, pairs, tokens: None)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        copies = tokenizer_copies or min(4, os.cpu_count() or 1)  # requests tokenized at once
        self._tokenizers = {id(model): TokenizerPool(model.tokenizer, copies) for model in (reranker, pruner) if model is not None}
        self._step_started: float | None = None  # when the batch now running began (None: idle)
        self.pending = 0  # jobs waiting or running

    def borrow_tokenizer(self, model: Any = None) -> AbstractContextManager[Any]:
        """A copy of ``model``'s tokenizer (default: the model that scores pairs) for this thread, while in use."""
        return self._tokenizers[id(model or self.reranker or self.pruner)].borrow()

    @property
    def max_length(self) -> int:
        return (self.reranker or self.pruner).max_length  # type: ignore[union-attr]

    @property
    def scaler(self) -> Any:
        return self.reranker.scaler if self.reranker is not None else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="jace-model-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish every queued job, then end the worker."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def stalled(self, timeout: float) -> str | None:
        """Why the worker cannot answer in time (``/health``'s 503 reason), or None when it can."""
        if self._thread is None or not self._thread.is_alive():
            return "the model worker is not running"
        started = self._step_started
        if started is not None and time.monotonic() - started > timeout:
            return f"one model batch has been running for {time.monotonic() - started:.0f} s, over the {timeout:g} s request timeout"
        return None

    # ---- tokenizing, in the request's thread ------------------------------------------------

    def encode_pairs(self, pairs: Sequence[Pair], *, truncate: bool = True) -> Encoded:
        """Tokenize pairs for scoring, once. Without ``truncate``, a pair over the limit raises TooLong.

        The check tokenizes to one token past the limit, so no pass is ever longer than that.
        """
        limit = self.max_length
        model = self.reranker or self.pruner
        features = self._check_lengths(model, pairs, limit, truncate)
        if self.reranker is not None:
            return Encoded("score", features, len(pairs), sum(len(ids) for ids in features["input_ids"]))
        with self.borrow_tokenizer(self.pruner) as tokenizer:
            plan = self.pruner.plan_pruning([(q, [p]) for q, p in pairs], tokenizer=tokenizer)  # type: ignore[union-attr]
        return Encoded("score", plan, len(pairs), plan.tokens)

    def _check_lengths(self, model: Any, pairs: Sequence[Pair], limit: int, truncate: bool) -> dict[str, list[list[int]]]:
        from jace.cross_encoder import encode_pairs

        with self.borrow_tokenizer(model) as tokenizer:
            features = encode_pairs(tokenizer, pairs, limit if truncate else limit + 1)
        if truncate:
            return features
        too_long = [i for i, ids in enumerate(features["input_ids"]) if len(ids) > limit]
        if too_long:
            raise TooLong(too_long[0], len(features["input_ids"][too_long[0]]), len(too_long), limit)
        return features

    def cut(self, texts: Sequence[str], side: str, *, budget: int | None = None, query: str | None = None) -> list[str]:
        """Cut each text to ``budget`` tokens (and to what the model has left after ``query``), keeping
        its start (``side="right"``) or its end (``"left"``, TEI's truncation_direction). Needs offsets."""
        with self.borrow_tokenizer() as tokenizer:
            return self._cut(tokenizer, texts, side, budget, query)

    def _cut(self, tokenizer: Any, texts: Sequence[str], side: str, budget: int | None, query: str | None) -> list[str]:
        if not getattr(tokenizer, "is_fast", False):
            raise LookupError("cutting texts by tokens needs a fast tokenizer; this model's has no offsets. "
                              "Leave the option out: the model truncates long texts on the right.")  # fmt: skip
        limit = self.max_length if budget is None else budget
        if query is not None:
            special = len(tokenizer("a", "b")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"]) * 2
            asked = tokenizer(query, add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]
            limit = min(limit, max(self.max_length - special - len(asked), 1))
        cut = []
        for text in texts:
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            if len(offsets) <= limit:
                cut.append(text)
            else:
                cut.append(text[offsets[-limit][0] :] if side == "left" else text[: offsets[limit - 1][1]])
        return cut

    def encode_contexts(self, query: str, contexts: Sequence[str]) -> Encoded:
        """Split and tokenize one query's contexts for pruning, once."""
        if self.pruner is None:
            raise LookupError("no pruner is loaded; start the server with --pruner FOLDER (or a PruningEncoder as MODEL).")
        with self.borrow_tokenizer(self.pruner) as tokenizer:
            plan = self.pruner.plan_pruning([(query, list(contexts))], tokenizer=tokenizer)
        return Encoded("prune", plan, len(contexts), plan.tokens)

    # ---- asking, from the event loop ----------------------------------------------------------

    async def run(self, encoded: Encoded, key: tuple, *, timeout: float | None = None,
                  disconnected: Callable[[], Awaitable[Any]] | None = None) -> list[Any]:  # fmt: skip
        """The answers for ``encoded`` (one per pair or context), in order.

        Raises asyncio.TimeoutError after ``timeout`` seconds and Disconnected when ``disconnected()``
        completes first; either way the worker drops the job's remaining batches.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else time.monotonic() + timeout
        job = _Job(encoded, key, loop.create_future(), loop, deadline)
        self.pending += 1
        self._queue.put(job)
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        answer = asyncio.ensure_future(asyncio.shield(job.future))
        try:
            done, _ = await asyncio.wait({answer} | ({watcher} if watcher else set()), timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if answer in done:
                return answer.result()
            job.cancelled = True  # the worker drops it before its next batch
            if watcher is not None and watcher in done:
                raise Disconnected()
            raise asyncio.TimeoutError()
        except asyncio.CancelledError:
            job.cancelled = True
            raise
        finally:
            self.pending -= 1
            for task in (answer, watcher):
                if task is not None and not task.done():
                    task.cancel()

    async def score(self, pairs: Sequence[Pair], *, raw_scores: bool = False, original_scale: bool = False,
                    timeout: float | None = None) -> list[float]:  # fmt: skip
        """Scores of ``pairs`` (sigmoid, logits with ``raw_scores``, or the training scale), in order."""
        encoded = await asyncio.to_thread(self.encode_pairs, pairs)
        return await self.run(encoded, (raw_scores, original_scale), timeout=timeout)

    async def prune(self, query: str, contexts: Sequence[str], *, threshold: float | None = None,
                    keep_top_context: bool | None = None, timeout: float | None = None) -> list[PruningResult]:  # fmt: skip
        """Pruning results (with rerank scores) of ``contexts`` for ``query``, in order.

        ``threshold`` and ``keep_top_context`` None use the pruner's saved settings
        (:meth:`~jace.pruning.encoder.PruningEncoder.prune_batch`).
        """
        encoded = await asyncio.to_thread(self.encode_contexts, query, contexts)
        return await self.run(encoded, (threshold, keep_top_context), timeout=timeout)

    # ---- worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        active: deque[_Group] = deque()
        stopping = False
        while not (stopping and not active):
            stopping = self._take_new(active, block=not active) or stopping
            if not active:
                continue
            group = active.popleft()
            now = time.monotonic()
            if all(job.dropped(now) for job in group.jobs):
                group.steps.close()
                continue
            self._step_started = now
            try:
                batch = next(group.steps)
                self.on_batch(group.jobs[0].encoded.kind, batch.items, batch.tokens)
                if batch.last:
                    next(group.steps)  # no model work left: the answer, at once (StopIteration)
            except StopIteration as finished:
                answers = group.split(finished.value)
                for job, answer in zip(group.jobs, answers):
                    job.loop.call_soon_threadsafe(_settle, job.future, answer, None)
                if not active and self._queue.empty():
                    _give_back_memory()
                continue
            except Exception as error:  # noqa: BLE001 - handed to every request of the group
                for job in group.jobs:
                    job.loop.call_soon_threadsafe(_settle, job.future, None, error)
                continue
            finally:
                self._step_started = None
            stopping = self._take_new(active, block=False) or stopping  # what came in meanwhile goes first
            active.append(group)

    def _take_new(self, active: deque[_Group], *, block: bool) -> bool:
        """Move waiting jobs into groups at the back of ``active``; True once the stop marker was seen."""
        jobs: list[_Job] = []
        stop = False
        try:
            item = self._queue.get(block=block)
            while True:
                if item is None:
                    stop = True
                else:
                    jobs.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        merging: dict[tuple, list[_Job]] = {}
        for job in jobs:
            if job.dropped(time.monotonic()):
                continue
            kind = job.encoded.kind
            members = merging.setdefault((kind, job.key), [])
            if members and sum(m.encoded.size for m in members) + job.encoded.size > self.batch_size:
                self._enqueue(active, members)
                members = merging[(kind, job.key)] = []
            members.append(job)
        for members in merging.values():
            if members:
                self._enqueue(active, members)
        return stop

    def _enqueue(self, active: deque[_Group], jobs: list[_Job]) -> None:
        try:
            active.append(self._group(jobs))
        except Exception as error:  # noqa: BLE001 - the requests get the error; the worker goes on
            for job in jobs:
                job.loop.call_soon_threadsafe(_settle, job.future, None, error)

    def _group(self, jobs: list[_Job]) -> _Group:
        """One step generator over the jobs' merged inputs, and how to split its answer back per job."""
        kind, key = jobs[0].encoded.kind, jobs[0].key
        payloads = [job.encoded.payload for job in jobs]
        if kind == "prune":
            steps = self.pruner.prune_steps(PruningPlan.join(payloads), threshold=key[0], keep_top_context=key[1],  # type: ignore[union-attr]
                                            batch_size=self.batch_size)  # fmt: skip
            return _Group(jobs, steps, lambda answer: answer)  # one query per job: one list of results each
        sizes = [job.encoded.size for job in jobs]
        raw_scores, original_scale = key
        if self.reranker is not None:
            merged = {name: [row for payload in payloads for row in payload[name]] for name in payloads[0]}
            steps = self.reranker.score_steps(merged, self.batch_size, raw_scores=raw_scores, original_scale=original_scale)
            return _Group(jobs, steps, lambda scores: _split(scores, sizes))
        if original_scale:
            error = ValueError("original_scale needs a model trained by jace (target_scaler.json); this is a PruningEncoder.")
            return _Group(jobs, _failing(error), lambda answer: answer)
        if self.pruner.mode != "reranking_pruning":  # type: ignore[union-attr]
            return _Group(jobs, _failing(ValueError("this PruningEncoder is 'pruning_only': it prunes but gives no scores.")),
                          lambda answer: answer)  # fmt: skip
        steps = self.pruner.prune_steps(PruningPlan.join(payloads), batch_size=self.batch_size)  # type: ignore[union-attr]
        return _Group(jobs, steps, lambda results: _split([_pruner_score(r[0].reranking_score, raw_scores) for r in results], sizes))


def _malloc_trim() -> Callable[[], Any] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return lambda: libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


_TRIM = _malloc_trim()


def _give_back_memory() -> None:
    """Return the heap pages a large request freed to the OS once the worker is idle. glibc keeps
    them otherwise, and the server's resident memory stays at its peak (measured in docs/reliability.md)."""
    if _TRIM is not None:
        _TRIM()


def _split(values: list[Any], sizes: list[int]) -> list[list[Any]]:
    parts, start = [], 0
    for size in sizes:
        parts.append(values[start : start + size])
        start += size
    return parts


def _pruner_score(score: float, raw: bool) -> float:
    if not raw:
        return score
    return math.log(score / (1 - score)) if 0 < score < 1 else math.copysign(float("inf"), score - 0.5)


def _failing(error: Exception) -> Generator[Batch, None, list[Any]]:
    raise error
    yield Batch(0, 0, True)  # pragma: no cover - makes this a generator


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
