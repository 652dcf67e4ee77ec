"""The model side of ``jace serve``: one worker thread that batches pairs across requests.

Requests put jobs on one queue. The worker takes the oldest job, then every job already waiting,
merges the pairs of jobs that want the same kind of answer, and runs them through jace's one
batching routine (length-sorted, under a padded-token budget) in a single call. So sixteen
clients sending twenty texts each cost about one batched pass, not sixteen small ones. Answers go
back to each request's future, in its own order.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jace.pruning.encoder import PruningEncoder, PruningResult
from jace.scoring import RerankerCrossEncoderClient

Pair = tuple[str, str]


@dataclass
class _Job:
    kind: str  # "score" or "prune"
    key: tuple  # jobs with the same kind and key are merged into one call
    payload: Any
    size: int
    tokens: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    cancelled: bool = False


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
    ) -> None:
        if reranker is None and pruner is None:
            raise ValueError("an Engine needs a reranker, a pruner, or both.")
        self.reranker, self.pruner = reranker, pruner
        self.batch_size = batch_size
        self.on_batch = on_batch or (lambda kind, pairs, tokens: None)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.pending = 0  # jobs waiting or running

    @property
    def tokenizer(self) -> Any:
        return (self.reranker or self.pruner).tokenizer  # type: ignore[union-attr]

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

    def pair_lengths(self, pairs: Sequence[Pair]) -> list[int]:
        """Untruncated token count of each pair, as the model's tokenizer builds it."""
        if not pairs:
            return []
        encoded = self.tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    async def _submit(self, kind: str, key: tuple, payload: Any, size: int, tokens: int, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        job = _Job(kind, key, payload, size, tokens, loop.create_future(), loop)
        self.pending += 1
        self._queue.put(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            job.cancelled = True  # the worker skips it if it has not started
            raise
        finally:
            self.pending -= 1

    async def score(self, pairs: Sequence[Pair], *, raw_scores: bool = False, original_scale: bool = False,
                    tokens: int = 0, timeout: float | None = None) -> list[float]:  # fmt: skip
        """Scores of ``pairs`` (sigmoid, logits with ``raw_scores``, or the training scale), in order.

        ``tokens`` (the pairs' token count, when the caller knows it) feeds the batch metrics.
        """
        return await self._submit("score", (raw_scores, original_scale), list(pairs), len(pairs), tokens, timeout)

    async def prune(self, query: str, contexts: Sequence[str], *, threshold: float | None = None,
                    keep_top_context: bool | None = None, tokens: int = 0,
                    timeout: float | None = None) -> list[PruningResult]:  # fmt: skip
        """Pruning results (with rerank scores) of ``contexts`` for ``query``, in order.

        ``threshold`` and ``keep_top_context`` None use the pruner's saved settings
        (:meth:`~jace.pruning.encoder.PruningEncoder.prune_batch`).
        """
        if self.pruner is None:
            raise LookupError("no pruner is loaded; start the server with --pruner FOLDER (or a PruningEncoder as MODEL).")
        return await self._submit("prune", (threshold, keep_top_context), (query, list(contexts)), len(contexts), tokens, timeout)

    # ---- worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is None:
                break
            jobs = [job]
            while True:  # everything already waiting joins this round
                try:
                    extra = self._queue.get_nowait()
                except queue.Empty:
                    break
                if extra is None:
                    stopping = True  # finish this round, then stop
                    break
                jobs.append(extra)
            groups: dict[tuple, list[_Job]] = {}
            for item in jobs:
                if not item.cancelled:
                    groups.setdefault((item.kind, item.key), []).append(item)
            for (kind, key), members in groups.items():
                self._run_group(kind, key, members)

    def _run_group(self, kind: str, key: tuple, jobs: list[_Job]) -> None:
        try:
            if kind == "score":
                pairs = [pair for job in jobs for pair in job.payload]
                self.on_batch(kind, len(pairs), sum(job.tokens for job in jobs))
                scores = self._score(pairs, *key)
                answers, start = [], 0
                for job in jobs:
                    answers.append(scores[start : start + job.size])
                    start += job.size
            else:
                items = [job.payload for job in jobs]
                self.on_batch(kind, sum(job.size for job in jobs), sum(job.tokens for job in jobs))
                answers = self.pruner.prune_batch(items, threshold=key[0], keep_top_context=key[1],  # type: ignore[union-attr]
                                                  batch_size=self.batch_size, show_progress_bar=False)  # fmt: skip
        except Exception as error:  # noqa: BLE001 - handed to every request of the group
            for job in jobs:
                job.loop.call_soon_threadsafe(_settle, job.future, None, error)
            return
        for job, answer in zip(jobs, answers):
            job.loop.call_soon_threadsafe(_settle, job.future, answer, None)

    def _score(self, pairs: list[Pair], raw_scores: bool, original_scale: bool) -> list[float]:
        if self.reranker is not None:
            return self.reranker.run(pairs, batch_size=self.batch_size, raw_scores=raw_scores,
                                     original_scale=original_scale, show_progress_bar=False)  # fmt: skip
        if original_scale:
            raise ValueError("original_scale needs a model trained by jace (target_scaler.json); this is a PruningEncoder.")
        scores = self.pruner.predict(pairs, batch_size=self.batch_size)  # type: ignore[union-attr]
        if raw_scores:
            import math

            return [math.log(s / (1 - s)) if 0 < s < 1 else math.copysign(float("inf"), s - 0.5) for s in scores]
        return scores


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
