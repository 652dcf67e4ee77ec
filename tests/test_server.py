"""`jace serve` for real: a uvicorn server in a subprocess on a free loopback port, tiny models,
bounded request counts and times."""

import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from jace.scoring import RerankerCrossEncoderClient
from serving import QUERY, TEXTS, Server

@pytest.fixture(scope="module")
def server(tiny_bert_dir, pruner_dir):
    running = Server(tiny_bert_dir, "--pruner", pruner_dir, "--max-client-batch-size", "64")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def direct(tiny_bert_dir):
    return RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")


def test_tei_rerank_returns_best_first_with_the_scores_of_run(server, direct):
    response = server.post("/rerank", {"query": QUERY, "texts": TEXTS, "return_text": True})
    assert response.status_code == 200, response.text
    hits = response.json()
    expected = direct.run([(QUERY, t) for t in TEXTS])
    assert [h["index"] for h in hits] == sorted(range(3), key=lambda i: expected[i], reverse=True)
    assert {h["index"]: h["score"] for h in hits} == pytest.approx(dict(enumerate(expected)), abs=1e-5)
    assert all(h["text"] == TEXTS[h["index"]] for h in hits)
    raw = server.post("/rerank", {"query": QUERY, "texts": TEXTS, "raw_scores": True}).json()
    logits = direct.run([(QUERY, t) for t in TEXTS], raw_scores=True)
    assert {h["index"]: h["score"] for h in raw} == pytest.approx(dict(enumerate(logits)), abs=1e-5)


def test_cohere_style_rerank_with_top_n_documents_and_token_meta(server, direct):
    body = {"model": "m", "query": QUERY, "documents": [TEXTS[0], {"text": TEXTS[1]}, TEXTS[2]], "top_n": 2, "return_documents": True}
    data = server.post("/v1/rerank", body).json()
    expected = direct.run([(QUERY, t) for t in TEXTS])
    best = sorted(range(3), key=lambda i: expected[i], reverse=True)[:2]
    assert [r["index"] for r in data["results"]] == best and data["id"]
    assert [r["document"]["text"] for r in data["results"]] == [TEXTS[i] for i in best]
    assert data["results"][0]["relevance_score"] == pytest.approx(expected[best[0]], abs=1e-5)
    tokens = sum(len(ids) for ids in direct.tokenizer([QUERY] * 3, TEXTS)["input_ids"])
    assert data["meta"]["tokens"]["input_tokens"] == tokens


def test_score_and_prune_endpoints(server, direct, pruner_dir):
    from jace.pruning import PruningEncoder

    pairs = [["お題", "回答です"], ["猫", "犬"]]
    assert server.post("/score", {"pairs": pairs}).json()["scores"] == pytest.approx(direct.run([tuple(p) for p in pairs]), abs=1e-5)
    response = server.post("/score", {"pairs": pairs, "original_scale": True})
    assert response.status_code == 422
    [problem] = response.json()["detail"]  # the validation shape, naming the field
    assert problem["loc"] == ["body", "original_scale"] and "target scaler" in problem["msg"]
    pruned = server.post("/prune", {"query": QUERY, "contexts": TEXTS[:2], "threshold": 0.5}).json()["results"]
    expected = PruningEncoder.from_pretrained(pruner_dir, device="cpu").prune(QUERY, TEXTS[:2], threshold=0.5)
    for got, want in zip(pruned, expected):
        assert got["pruned_context"] == want.pruned_context
        assert got["reranking_score"] == pytest.approx(want.reranking_score, abs=1e-5)
        assert got["compression_rate"] == pytest.approx(want.compression_rate)
        assert got["kept_sentences"] == [i for i, p in enumerate(want.sentence_probabilities) if p > 0.5]


def test_prune_without_a_threshold_uses_the_pruners_saved_default(server, pruner_dir):
    from jace.pruning import PruningEncoder

    encoder = PruningEncoder.from_pretrained(pruner_dir, device="cpu")
    assert encoder.default_threshold == 0.6
    pruned = server.post("/prune", {"query": QUERY, "contexts": TEXTS}).json()["results"]
    probabilities = [p for result in pruned for p in result["sentence_probabilities"]]
    assert any(0.1 < p <= 0.6 for p in probabilities), "the fixture should tell 0.1 and 0.6 apart"
    for got, want in zip(pruned, encoder.prune(QUERY, TEXTS, threshold=0.6)):
        assert got["pruned_context"] == want.pruned_context
        assert got["kept_sentences"] == [i for i, p in enumerate(want.sentence_probabilities) if p > 0.6]


def test_prune_keep_top_context_per_request_matches_prune(server, pruner_dir):
    from jace.pruning import PruningEncoder

    encoder = PruningEncoder.from_pretrained(pruner_dir, device="cpu")
    assert not encoder.keep_top_context  # the fixture's saved setting: off
    body = {"query": QUERY, "contexts": TEXTS, "threshold": 1.0}  # no sentence passes 1.0
    off = server.post("/prune", body).json()["results"]
    on = server.post("/prune", {**body, "keep_top_context": True}).json()["results"]
    assert all(result["kept_sentences"] == [] for result in off)
    assert sum(len(result["kept_sentences"]) for result in on) == 1, "only the top context keeps its best sentence"
    for got, want in zip(on, encoder.prune(QUERY, TEXTS, threshold=1.0, keep_top_context=True)):
        assert got["kept_sentences"] == want.kept_indices
        assert got["pruned_context"] == want.pruned_context


def test_health_info_metrics_page_and_openapi(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    info = httpx.get(server.url + "/info").json()
    assert info["mode"] == "rerank+prune" and info["device"] == "cpu" and info["limits"]["max_client_batch_size"] == 64
    metrics = httpx.get(server.url + "/metrics").text
    for name in ("jace_requests_total", "jace_request_latency_seconds", "jace_batch_pairs", "jace_batch_tokens", "jace_queue_depth"):
        assert name in metrics
    assert 'route="/rerank",status="200"' in metrics
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<form" in page.text and "http" not in page.text.split("<script>")[1].split("fetch(")[0]
    assert "//cdn" not in page.text and "src=" not in page.text  # nothing loaded from outside: works offline
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert {"/rerank", "/v1/rerank", "/score", "/prune", "/health", "/info", "/metrics"} <= set(paths)
    assert httpx.get(server.url + "/docs").status_code == 200


def test_32_concurrent_clients_get_exactly_the_scores_of_direct_run(server, direct):
    requests = [(f"{QUERY}{i}", [f"{TEXTS[j % 3]}{'あ' * (i + j)}" for j in range(3 + i % 17)]) for i in range(32)]
    barrier = threading.Barrier(32)
    calls_before = _model_calls(server)

    def call(item):
        query, texts = item
        barrier.wait()
        return server.post("/rerank", {"query": query, "texts": texts}).json()

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, requests))
    for (query, texts), hits in zip(requests, answers):
        expected = direct.run([(query, t) for t in texts])
        assert {h["index"]: h["score"] for h in hits} == pytest.approx(dict(enumerate(expected)), abs=1e-5)
    assert _model_calls(server) - calls_before < 32  # requests were merged into fewer model calls


def _queue_depth(server) -> float:
    metrics = httpx.get(server.url + "/metrics").text.splitlines()
    return float(next(line for line in metrics if line.startswith("jace_queue_depth ")).split()[-1])


def _model_calls(server) -> float:
    metrics = httpx.get(server.url + "/metrics").text.splitlines()
    return float(next(line for line in metrics if line.startswith('jace_batch_pairs_count{kind="score"}')).split()[-1])


BAD = [
    ("/rerank", "not json at all", 400, "JSON"),
    ("/rerank", {"texts": TEXTS}, 422, "query"),
    ("/rerank", {"query": "", "texts": TEXTS}, 422, "query"),
    ("/rerank", {"query": "   ", "texts": TEXTS}, 422, "query"),
    ("/rerank", {"query": QUERY, "texts": []}, 422, "texts"),
    ("/rerank", {"query": QUERY, "texts": ["ok", ""]}, 422, "texts"),
    ("/rerank", {"query": QUERY, "texts": "a string"}, 422, "texts"),
    ("/rerank", {"query": 5, "texts": TEXTS}, 422, "query"),
    ("/rerank", {"query": QUERY, "texts": [None]}, 422, "texts"),
    ("/rerank", {"query": QUERY, "texts": TEXTS, "truncation_direction": "up"}, 422, "truncation_direction"),
    ("/rerank", {"query": QUERY, "texts": TEXTS, "unknown": 1}, 422, "unknown"),
    ("/rerank", {"query": QUERY, "texts": ["x"] * 65}, 413, "max-client-batch-size"),
    ("/rerank", {"query": QUERY, "texts": ["猫" * 2000]}, 413, "truncate"),
    ("/v1/rerank", {"query": QUERY, "documents": TEXTS, "top_n": 0}, 422, "top_n"),
    ("/v1/rerank", {"query": QUERY, "documents": [{"txt": "a"}]}, 422, "documents"),
    ("/v1/rerank", {"query": QUERY, "documents": []}, 422, "documents"),
    ("/score", {"pairs": [["a"]]}, 422, "pairs"),
    ("/score", {"pairs": [["a", ""]]}, 422, "pairs"),
    ("/score", {"pairs": []}, 422, "pairs"),
    ("/prune", {"query": QUERY, "contexts": TEXTS, "threshold": 1.5}, 422, "threshold"),
    ("/prune", {"query": QUERY, "contexts": TEXTS, "threshold": -0.1}, 422, "threshold"),
    ("/prune", {"query": QUERY, "contexts": []}, 422, "contexts"),
    ("/prune", {"query": "", "contexts": TEXTS}, 422, "query"),
]


@pytest.mark.parametrize("path,body,status,says", BAD, ids=[f"{p} {s} {w}" for p, _, s, w in BAD])
def test_bad_requests_get_a_4xx_that_says_why_and_the_server_keeps_answering(server, path, body, status, says):
    if isinstance(body, str):
        response = httpx.post(server.url + path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = server.post(path, body)
    assert response.status_code == status, response.text
    assert says in response.text
    assert server.post("/rerank", {"query": QUERY, "texts": TEXTS}).status_code == 200


def test_long_texts_are_truncated_when_asked_from_either_side(server, direct):
    long = "犬" * 1000 + "猫" * 1000  # one token a character: the head and the tail differ
    room = 512 - len(direct.tokenizer(QUERY, "x")["input_ids"]) + 1  # tokens left for the text after the query
    scores = {}
    for direction, kept in (("right", long[:room]), ("Left", long[-room:])):
        response = server.post("/rerank", {"query": QUERY, "texts": [long], "truncate": True, "truncation_direction": direction})
        assert response.status_code == 200, response.text
        scores[direction] = response.json()[0]["score"]
        assert scores[direction] == pytest.approx(direct.run([(QUERY, kept)])[0], abs=1e-5), direction
    assert scores["right"] != pytest.approx(scores["Left"], abs=1e-6)


def test_api_key_is_required_except_on_health_and_compared_in_constant_time(tiny_bert_dir):
    running = Server(tiny_bert_dir, env={"JACE_API_KEY": "s3cret"})
    try:
        assert httpx.get(running.url + "/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = running.post("/rerank", {"query": QUERY, "texts": TEXTS}, headers=headers)
            assert response.status_code == 401 and "API key" in response.json()["detail"]
        good = running.post("/rerank", {"query": QUERY, "texts": TEXTS}, headers={"Authorization": "Bearer s3cret"})
        assert good.status_code == 200
        assert httpx.get(running.url + "/info").status_code == 401
    finally:
        running.stop()


def test_a_full_queue_answers_429_with_retry_after_and_recovers(tiny_bert_dir):
    running = Server(tiny_bert_dir, "--max-concurrent-requests", "2")
    try:
        texts = [("猫が好きです。" * 30) + str(i) for i in range(60)]
        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(lambda _: running.post("/rerank", {"query": QUERY, "texts": texts}), range(24)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and statuses.count(200) >= 2, statuses
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["Retry-After"] == "1" and "max-concurrent-requests" in refused.text
        assert running.post("/rerank", {"query": QUERY, "texts": TEXTS}).status_code == 200
    finally:
        running.stop()


def test_sigterm_finishes_in_flight_requests_then_exits(tiny_bert_dir):
    running = Server(tiny_bert_dir)
    texts = [("梅雨は東アジアの気象です。" * 20) + str(i) for i in range(400)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(running.post, "/rerank", {"query": QUERY, "texts": texts}) for _ in range(4)]
        deadline = time.monotonic() + 30
        while _queue_depth(running) < 4:  # all four requests are in the worker's queue
            assert time.monotonic() < deadline and not any(f.done() for f in futures)
        running.process.send_signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200] * 4
    # uvicorn drains, runs the shutdown (the model worker finishes its queue), then re-raises SIGTERM.
    assert running.process.wait(timeout=60) in (0, -signal.SIGTERM)
    running.reader.join(timeout=10)  # the log is read to its end
    assert "Application shutdown complete" in "".join(running.log)
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.url + "/health", timeout=2)


def test_a_pruning_encoder_as_model_serves_rerank_and_prune_and_slow_requests_time_out(pruner_dir):
    from jace.pruning import PruningEncoder

    running = Server(pruner_dir, "--request-timeout", "0.5")
    try:
        assert httpx.get(running.url + "/info").json()["mode"] == "rerank+prune"
        encoder = PruningEncoder.from_pretrained(pruner_dir, device="cpu")
        hits = running.post("/rerank", {"query": QUERY, "texts": TEXTS}).json()
        assert {h["index"]: h["score"] for h in hits} == pytest.approx(dict(enumerate(encoder.predict([(QUERY, t) for t in TEXTS]))), abs=1e-5)
        assert running.post("/prune", {"query": QUERY, "contexts": TEXTS}).status_code == 200
        slow = running.post("/rerank", {"query": QUERY, "texts": ["梅雨は東アジアの気象です。" * 30] * 600, "truncate": True})
        assert slow.status_code == 504 and "longer than 0.5 s" in slow.json()["detail"]
        # The timed-out request's remaining batches were dropped: the next request is answered at once.
        started = time.monotonic()
        assert running.post("/rerank", {"query": QUERY, "texts": TEXTS}).status_code == 200
        assert time.monotonic() - started < 2.0
    finally:
        running.stop()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian package 'chromium')")
def test_page_ranks_passages_in_a_real_browser(server, direct):
    from playwright.sync_api import sync_playwright

    artifacts = Path(__file__).resolve().parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('rerank')")
            page.fill("#query", QUERY)
            page.fill("#texts", "\n".join(TEXTS))
            page.click("#submit")
            page.wait_for_selector("#results li", timeout=20_000)
            items = page.locator("#results li")
            assert items.count() == 3
            shown = [(float(items.nth(i).locator(".score").inner_text()), items.nth(i).inner_text()) for i in range(3)]
            marked = page.locator("#results mark").count() + page.locator("#results .dropped").count()
            page.screenshot(path=str(artifacts / "serve_search.png"), full_page=True)
            page.check("input[value=humor]")
            page.fill("#query", "お題")
            page.fill("#texts", "回答です\n猫\n面白い答え")
            page.click("#submit")
            page.wait_for_function("document.querySelectorAll('#results li').length === 3")
            page.screenshot(path=str(artifacts / "serve_humor.png"), full_page=True)
            humor = [float(page.locator("#results li .score").nth(i).inner_text()) for i in range(3)]
        finally:
            browser.close()
    # Search mode used /prune (a pruner is loaded): ranked by rerank score, kept sentences marked.
    scores = [score for score, _ in shown]
    assert scores == sorted(scores, reverse=True)
    assert sorted(text.split(f"{score:.4f}", 1)[1] for score, text in shown) == sorted(TEXTS)
    assert marked == 5  # every sentence of the three passages is shown as kept or dropped
    expected = direct.run([("お題", t) for t in ["回答です", "猫", "面白い答え"]])
    assert humor == pytest.approx(sorted(expected, reverse=True), abs=1e-4)
