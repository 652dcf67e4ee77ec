"""The serving engine in-process: turns between requests, dropping abandoned work between two
batches, the stall report behind /health, and tokenizers that are never shared between threads.

The reranker is real (the tiny BERT); a gate around its batch call only holds a batch until the
test has queued the next request, so the order of events is fixed, not timed."""

import asyncio
import threading

import pytest

from jace.scoring import RerankerCrossEncoderClient
from jace.server.engine import Disconnected, Engine

QUERY = "日本で梅雨がないのは？"


class GatedReranker:
    """Records each batch's rows; the first batch waits until ``release`` is set."""

    def __init__(self, client: RerankerCrossEncoderClient) -> None:
        self.client, self.calls = client, []
        self.started, self.release = threading.Event(), threading.Event()
        original = client._logits

        def logits(features, indices):
            self.calls.append(len(features["input_ids"]))
            self.started.set()
            assert self.release.wait(timeout=30), "the test never released the first batch"
            return original(features, indices)

        client._logits = logits


@pytest.fixture()
def gated(tiny_bert_dir):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    gate = GatedReranker(client)
    engine = Engine(client, batch_size=4)
    engine.start()
    yield engine, gate
    gate.release.set()
    engine.stop()


BIG = [(QUERY, f"梅雨は東アジアの気象です。{i}") for i in range(40)]  # 10 batches of 4
SMALL = [(QUERY, "北海道には梅雨がない。")]


def test_a_small_request_runs_right_after_the_batch_of_a_big_one_in_progress(gated, tiny_bert_dir):
    engine, gate = gated

    async def scenario():
        big = asyncio.ensure_future(engine.run(engine.encode_pairs(BIG), (False, False)))
        await asyncio.to_thread(gate.started.wait, 30)
        small = asyncio.ensure_future(engine.run(engine.encode_pairs(SMALL), (False, False)))
        await asyncio.sleep(0)  # the small job is queued
        gate.release.set()
        return await small, await big

    small, big = asyncio.run(scenario())
    assert gate.calls[0] == len(BIG) and gate.calls[1] == len(SMALL), gate.calls  # the small one went second
    assert len(gate.calls) == 11
    direct = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    assert small == pytest.approx(direct.run(SMALL), abs=1e-6)
    assert big == pytest.approx(direct.run(BIG), abs=1e-6)


@pytest.mark.parametrize("ending", ["timeout", "disconnect"])
def test_an_abandoned_request_is_dropped_before_its_next_batch(gated, ending):
    engine, gate = gated

    async def scenario():
        hung_up = asyncio.Event()

        async def disconnected():
            await hung_up.wait()

        options = {"timeout": 0.05} if ending == "timeout" else {"disconnected": disconnected}
        big = asyncio.ensure_future(engine.run(engine.encode_pairs(BIG), (False, False), **options))
        await asyncio.to_thread(gate.started.wait, 30)
        hung_up.set()
        with pytest.raises(asyncio.TimeoutError if ending == "timeout" else Disconnected):
            await big
        gate.release.set()  # the batch in progress finishes; the other nine never start
        return await engine.run(engine.encode_pairs(SMALL), (False, False))

    assert len(asyncio.run(scenario())) == 1
    assert gate.calls == [len(BIG), len(SMALL)]
    assert engine.pending == 0


def test_a_batch_running_past_the_request_timeout_is_reported_as_a_stall(gated):
    engine, gate = gated
    assert engine.stalled(timeout=0.01) is None

    async def scenario():
        job = asyncio.ensure_future(engine.run(engine.encode_pairs(SMALL), (False, False)))
        await asyncio.to_thread(gate.started.wait, 30)
        reason = None
        for _ in range(1000):  # the clock has to pass the timeout: wait for it in small steps
            reason = engine.stalled(timeout=0.01)
            if reason is not None:
                break
            await asyncio.sleep(0.005)
        gate.release.set()
        await job
        return reason

    reason = asyncio.run(scenario())
    assert reason is not None and "request timeout" in reason
    assert engine.stalled(timeout=0.01) is None  # idle again


def test_threads_tokenizing_at_once_never_share_a_fast_tokenizer(tiny_bert_dir):
    engine = Engine(RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu"), tokenizer_copies=2)
    held, both_hold = [], threading.Barrier(2, timeout=30)

    def tokenize() -> None:
        with engine.borrow_tokenizer() as tokenizer:
            held.append(tokenizer)
            both_hold.wait()  # the other thread holds one at the same time

    threads = [threading.Thread(target=tokenize) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert held[0] is not held[1]
    assert all(tokenizer is not engine.reranker.tokenizer and tokenizer.is_fast for tokenizer in held)
    assert engine.encode_pairs([(QUERY, "梅雨")]).payload["input_ids"] == engine.reranker.encode([(QUERY, "梅雨")])["input_ids"]
