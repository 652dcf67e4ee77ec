"""`jace serve` against hostile input, real third-party clients and an API fuzzer: one real server
(API key, pruner, small limits) on a free loopback port, bounded request counts and times."""

import json
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from jace.scoring import RerankerCrossEncoderClient
from serving import QUERY, TEXTS, Server

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def server(tiny_bert_dir, pruner_dir):
    running = Server(tiny_bert_dir, "--pruner", pruner_dir, "--max-client-batch-size", "64",
                     "--max-request-bytes", str(MAX_BYTES), env={"JACE_API_KEY": KEY})  # fmt: skip
    yield running
    running.stop()


@pytest.fixture(scope="module")
def direct(tiny_bert_dir):
    return RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")


def post(server, path, body=None, *, content=None, headers=None, timeout=60):
    headers = {**AUTH, "Content-Type": "application/json", **(headers or {})}
    if content is None:
        content = json.dumps(body, ensure_ascii=False).encode("utf-8")
    return httpx.post(server.url + path, content=content, headers=headers, timeout=timeout)


def good_scores(server):
    hits = post(server, "/rerank", {"query": QUERY, "texts": TEXTS}).json()
    return {h["index"]: h["score"] for h in hits}


SURROGATE = '"\\ud800"'  # a lone UTF-16 surrogate, as JSON spells it
HOSTILE = [
    # (name, path, raw JSON body, allowed statuses)
    ("lone surrogate in query", "/rerank", f'{{"query": {SURROGATE}, "texts": ["a"]}}', {422}),
    ("lone surrogate in a text", "/rerank", f'{{"query": "q", "texts": ["a", {SURROGATE}]}}', {422}),
    ("lone surrogate as a field name", "/rerank", f'{{"query": "q", "texts": ["a"], {SURROGATE}: 1}}', {422}),
    ("lone surrogate in a v1 document field", "/v1/rerank", f'{{"query": "q", "documents": [{{"text": "a", "title": {SURROGATE}}}]}}', {422}),
    ("lone surrogate in a v2 model name", "/v2/rerank", f'{{"model": {SURROGATE}, "query": "q", "documents": ["a"]}}', {422}),
    ("lone surrogate in a pair", "/score", f'{{"pairs": [["a", {SURROGATE}]]}}', {422}),
    ("NaN threshold", "/prune", '{"query": "q", "contexts": ["a"], "threshold": NaN}', {422}),
    ("Infinity threshold", "/prune", '{"query": "q", "contexts": ["a"], "threshold": Infinity}', {422}),
    ("overflowing threshold", "/prune", '{"query": "q", "contexts": ["a"], "threshold": 1e999}', {422}),
    ("NaN top_n", "/v1/rerank", '{"query": "q", "documents": ["a"], "top_n": NaN}', {422}),
    ("NaN in a text", "/rerank", '{"query": "q", "texts": [NaN]}', {422}),
    ("huge integer top_n", "/v1/rerank", '{"query": "q", "documents": ["a"], "top_n": 1' + "0" * 5000 + "}", {400, 422}),
    ("large but valid top_n", "/v1/rerank", '{"query": "q", "documents": ["a"], "top_n": 1' + "0" * 300 + "}", {200}),
    ("deep nesting", "/rerank", '{"query": "q", "texts": ' + "[" * 100_000 + "]" * 100_000 + "}", {400, 422}),
    ("not JSON", "/rerank", "not json at all", {400}),
    ("truncated JSON", "/rerank", '{"query": "q", "texts": ["a"', {400}),
    ("empty body", "/rerank", "", {400, 422}),
    ("a JSON array", "/rerank", '["q", "a"]', {422}),
    ("0 as a boolean", "/rerank", '{"query": "q", "texts": ["a"], "raw_scores": 0}', {422}),
    ("a string as a boolean", "/score", '{"pairs": [["a", "b"]], "original_scale": "false"}', {422}),
    ("false as a threshold", "/prune", '{"query": "q", "contexts": ["a"], "threshold": false}', {422}),
    ("true as top_n", "/v2/rerank", '{"model": "m", "query": "q", "documents": ["a"], "top_n": true}', {422}),
    ("blank texts only", "/rerank", '{"query": "q", "texts": ["\\u3000", "\\u00a0"]}', {422}),
    ("document object without text", "/v1/rerank", '{"query": "q", "documents": [{"title": "t"}]}', {422}),
    ("document field that is not a string", "/v1/rerank", '{"query": "q", "documents": [{"text": "a", "n": 5}]}', {422}),
    ("v2 document object", "/v2/rerank", '{"model": "m", "query": "q", "documents": [{"text": "a"}]}', {422}),
    ("max_tokens_per_doc 0", "/v2/rerank", '{"model": "m", "query": "q", "documents": ["a"], "max_tokens_per_doc": 0}', {422}),
    ("too many texts", "/rerank", json.dumps({"query": "q", "texts": ["a"] * 65}), {413}),
]


@pytest.mark.parametrize("name,path,body,allowed", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_input_gets_a_declared_4xx_never_a_500_and_scores_stay_the_same(server, name, path, body, allowed):
    before = good_scores(server)
    response = post(server, path, content=body.encode("utf-8", "surrogatepass"))
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    detail = response.json()["detail"] if response.status_code != 200 else None  # every answer is JSON
    if response.status_code == 422:
        assert all({"loc", "msg", "type"} <= set(problem) for problem in detail), detail
    elif response.status_code != 200:
        assert isinstance(detail, str) and detail
    assert good_scores(server) == pytest.approx(before, abs=1e-9)


def test_non_utf8_and_non_json_content_types_are_refused_cleanly(server):
    for content, headers in ((b'{"query": "\xff\xfe", "texts": ["a"]}', {}), (b"query=q", {"Content-Type": "text/plain"})):
        response = post(server, "/rerank", content=content, headers=headers)
        assert 400 <= response.status_code < 500, response.text


def _rss(server) -> int:
    return psutil.Process(server.process.pid).memory_info().rss


def test_a_body_over_the_limit_is_413_at_once_without_being_read(server):
    rss = _rss(server)
    body = json.dumps({"query": QUERY, "texts": ["猫" * (10 * 1024 * 1024)]}).encode()  # 30 MB of UTF-8
    started = time.monotonic()
    response = post(server, "/rerank", content=body)
    assert response.status_code == 413 and "--max-request-bytes" in response.json()["detail"]
    assert time.monotonic() - started < 1.0

    def chunks():  # no Content-Length: the server counts while it reads
        for _ in range(30):
            yield b"x" * (1024 * 1024)

    streamed = httpx.post(server.url + "/rerank", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert streamed.status_code == 413
    assert _rss(server) - rss < 100 * 1024 * 1024
    assert good_scores(server)


def test_the_api_key_is_checked_before_the_body_is_read(server):
    big = b"{" + b" " * (30 * 1024 * 1024)
    started = time.monotonic()
    for content in (big, b"not json"):
        response = httpx.post(server.url + "/rerank", content=content, headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert time.monotonic() - started < 2.0
    assert httpx.get(server.url + "/health").status_code == 200  # open without the key
    assert httpx.get(server.url + "/openapi.json").status_code == 200


def _route_labels(server) -> set[str]:
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    return {line.split('route="')[1].split('"')[0] for line in text.splitlines() if line.startswith("jace_requests_total{")}


def test_a_thousand_unknown_paths_add_at_most_one_metrics_series(server):
    assert good_scores(server)
    before = _route_labels(server)
    with httpx.Client(base_url=server.url, headers=AUTH) as client:
        for _ in range(1000):
            assert client.get(f"/nope-{uuid.uuid4().hex}").status_code == 404
    after = _route_labels(server)
    assert len(after - before) <= 1 and after - before <= {"unmatched"}
    assert "/rerank" in after


def test_openapi_declares_what_the_server_does(server):
    schema = httpx.get(server.url + "/openapi.json").json()
    assert schema["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    paths = schema["paths"]
    assert {"/rerank", "/v1/rerank", "/v2/rerank", "/score", "/prune", "/health", "/info", "/metrics"} <= set(paths)
    for path in ("/rerank", "/v1/rerank", "/v2/rerank", "/score", "/prune"):
        operation = paths[path]["post"]
        assert {"200", "400", "401", "413", "422", "429", "504"} <= set(operation["responses"]), path
        assert operation["security"] == [{"bearer": []}]
        assert "ValidationMessage" in json.dumps(operation["responses"]["422"])
    assert "security" not in paths["/health"]["get"] and "503" in paths["/health"]["get"]["responses"]
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    request = schema["components"]["schemas"]["RerankRequest"]
    assert request["properties"]["texts"]["maxItems"] == 64
    assert request["properties"]["raw_scores"]["type"] == "boolean"
    assert post(server, "/rerank", {"query": "q", "texts": ["a"], "return_text": 1}).status_code == 422
    # The scaler-less model: original_scale=true is a 422, so the schema allows only false.
    assert schema["components"]["schemas"]["ScoreRequest"]["properties"]["original_scale"]["enum"] == [False]


def test_schemathesis_finds_no_failure_with_every_check(server, tmp_path):
    """A bounded, seeded fuzz run over the server's own OpenAPI: every check, a few hundred cases."""
    config = tmp_path / "schemathesis.toml"
    # 413 is TEI's answer for a request over a size limit (--max-client-batch-size is declared as maxItems;
    # a text's token count is not expressible in JSON Schema), so both data checks accept it.
    config.write_text("[checks.negative_data_rejection]\n"
                      "expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]\n"
                      "[checks.positive_data_acceptance]\n"
                      'expected-statuses = ["2xx", 401, 413, 429]\n')  # fmt: skip
    command = [shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis",
               "--config-file", str(config), "run", server.url + "/openapi.json", "--checks", "all",
               "-H", f"Authorization: Bearer {KEY}", "--seed", "20261207", "--max-examples", "20",
               "--generation-database", "none", "--phases", "examples,coverage,fuzzing", "--workers", "1",
               "--request-timeout", "30"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    generated = int(output.split(" generated")[0].split()[-1])
    assert 100 <= generated <= 1000, output[-2000:]
    assert "No issues found" in output
    assert good_scores(server)


def test_cohere_client_and_client_v2_get_the_scores_of_run(server, direct):
    cohere = pytest.importorskip("cohere")
    expected = direct.run([(QUERY, t) for t in TEXTS])
    best = sorted(range(3), key=lambda i: expected[i], reverse=True)
    v1 = cohere.Client(api_key=KEY, base_url=server.url).rerank(query=QUERY, documents=TEXTS, top_n=2, return_documents=True)
    assert [r.index for r in v1.results] == best[:2]
    assert [r.relevance_score for r in v1.results] == pytest.approx([expected[i] for i in best[:2]], abs=1e-5)
    assert v1.results[0].document.text == TEXTS[best[0]]
    v2 = cohere.ClientV2(api_key=KEY, base_url=server.url).rerank(model="jace", query=QUERY, documents=TEXTS)
    assert [r.index for r in v2.results] == best
    assert [r.relevance_score for r in v2.results] == pytest.approx([expected[i] for i in best], abs=1e-5)
    with pytest.raises(cohere.core.api_error.ApiError) as refused:
        cohere.ClientV2(api_key="wrong", base_url=server.url).rerank(model="jace", query=QUERY, documents=TEXTS)
    assert refused.value.status_code == 401


def test_langchain_cohere_rerank_runs_against_v2(server, direct):
    pytest.importorskip("langchain_cohere")
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    reranker = CohereRerank(cohere_api_key=KEY, base_url=server.url, model="jace", top_n=2)
    kept = reranker.compress_documents([Document(page_content=t) for t in TEXTS], QUERY)
    expected = direct.run([(QUERY, t) for t in TEXTS])
    best = sorted(range(3), key=lambda i: expected[i], reverse=True)[:2]
    assert [d.page_content for d in kept] == [TEXTS[i] for i in best]
    assert [d.metadata["relevance_score"] for d in kept] == pytest.approx([expected[i] for i in best], abs=1e-5)


def test_v1_honours_cohere_optional_fields(server, direct):
    documents = [{"title": "梅雨", "text": TEXTS[0]}, {"title": "猫", "text": TEXTS[1]}, TEXTS[2]]
    body = {"query": QUERY, "documents": documents, "rank_fields": ["title", "text"], "return_documents": True, "max_chunks_per_doc": 3}
    data = post(server, "/v1/rerank", body).json()
    texts = ["title: 梅雨\ntext: " + TEXTS[0], "title: 猫\ntext: " + TEXTS[1], TEXTS[2]]
    expected = direct.run([(QUERY, t) for t in texts])
    assert {r["index"]: r["relevance_score"] for r in data["results"]} == pytest.approx(dict(enumerate(expected)), abs=1e-5)
    assert {r["index"]: r["document"] for r in data["results"]}[0] == documents[0]  # returned as sent
    cut = post(server, "/v2/rerank", {"model": "m", "query": QUERY, "documents": [TEXTS[0]], "max_tokens_per_doc": 3}).json()
    first_three = direct.tokenizer.decode(direct.tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"][:3]).replace(" ", "")
    assert cut["results"][0]["relevance_score"] == pytest.approx(direct.run([(QUERY, first_three)])[0], abs=1e-5)
    assert cut["meta"]["api_version"] == {"version": "2"}


@pytest.fixture(scope="module")
def roomy(tiny_bert_dir):
    """A server that takes two thousand texts in one request."""
    running = Server(tiny_bert_dir, "--max-client-batch-size", "2000")
    yield running
    running.stop()


THOUSAND = [("梅雨は東アジアの気象です。" * 40) + str(i) for i in range(1000)]  # 1000 texts of 512 tokens: 32 batches
PLANNED = 64  # batches of a request of two thousand such texts


def test_a_client_that_goes_away_frees_the_model_between_two_batches(roomy):
    before = _plain_batches(roomy)
    with pytest.raises(httpx.TimeoutException):  # the client hangs up after 0.5 s
        httpx.post(roomy.url + "/rerank", json={"query": QUERY, "texts": THOUSAND * 2, "truncate": True}, timeout=httpx.Timeout(60, read=0.5))
    hung_up = _plain_batches(roomy)
    assert hung_up - before < PLANNED, "the request finished before its client hung up: make it bigger"
    started = time.monotonic()
    small = httpx.post(roomy.url + "/rerank", json={"query": QUERY, "texts": TEXTS}, timeout=60)
    assert small.status_code == 200 and time.monotonic() - started < 2.0
    # After the hang-up: at most the batch in progress, one more while the server notices, and the small request's.
    assert _plain_batches(roomy) - hung_up <= 3, (before, hung_up, _plain_batches(roomy))


def test_a_one_text_request_is_answered_while_a_thousand_text_request_runs(roomy, direct):
    """The worker takes turns between requests, one batch each: the small one waits about one batch."""
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.post, roomy.url + "/rerank", json={"query": QUERY, "texts": THOUSAND, "truncate": True})
        deadline = time.monotonic() + 60
        first = _plain_batches(roomy)
        while _plain_batches(roomy) < first + 2:  # the big request is in the worker
            assert not running.done() and time.monotonic() < deadline
        started = time.monotonic()
        small = client.post(roomy.url + "/rerank", json={"query": QUERY, "texts": TEXTS[:1]})
        waited = time.monotonic() - started
        assert small.status_code == 200
        assert not running.done(), "the big request should still be running: make it bigger"
        big = running.result()
    assert waited < 2.0, waited
    assert big.status_code == 200 and len(big.json()) == 1000
    assert small.json()[0]["score"] == pytest.approx(direct.run([(QUERY, TEXTS[0])])[0], abs=1e-5)


def _plain_batches(server) -> float:
    text = httpx.get(server.url + "/metrics").text
    return float(next(line for line in text.splitlines() if line.startswith('jace_batch_pairs_count{kind="score"}')).split()[-1])
