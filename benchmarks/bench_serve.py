"""Load test of `jace serve` on loopback: throughput, p50/p99 latency and failures at 16 and 64
concurrent clients, against a naive FastAPI app calling CrossEncoder.predict per request and
against direct in-process `run()` over the same pairs (the ceiling). Bounded in requests and time.

Each request is one お題 with 10-50 answers drawn from the humor validation split.

Run:  .venv/bin/python benchmarks/bench_serve.py --clients 16 64 --requests-per-client 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd

from common import data_file, machine, minilm_path

HERE = Path(__file__).resolve().parent


def workload(n: int, seed: int) -> list[dict]:
    frame = pd.read_csv(data_file("humor_validation.csv"), dtype=str, keep_default_na=False)
    rng = random.Random(seed)
    prompts, answers = frame["odai"].unique().tolist(), frame["response"].tolist()
    return [{"query": rng.choice(prompts), "texts": rng.sample(answers, rng.randint(10, 50))} for _ in range(n)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], port: int, env: dict, cwd: Path | None = None) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server on port {port} did not start: {' '.join(command)}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


async def load(url: str, requests: list[dict], clients: int, time_limit: float) -> dict:
    """``clients`` concurrent clients send ``requests`` (each client its share, one at a time)."""
    latencies, statuses, pairs_done = [], [], 0
    deadline = time.monotonic() + time_limit
    queue: asyncio.Queue = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    async def client(session: httpx.AsyncClient) -> None:
        nonlocal pairs_done
        while not queue.empty() and time.monotonic() < deadline:
            body = queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await session.post(url + "/rerank", json=body, timeout=max(deadline - time.monotonic(), 1))
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            latencies.append(time.perf_counter() - started)
            statuses.append(status)
            if status == 200:
                pairs_done += len(body["texts"])

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "pairs_per_s": pairs_done / wall, "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "requests": len(statuses), "failed": sum(s not in (200, 429) for s in statuses), "429": statuses.count(429),
        "unsent": len(requests) - len(statuses),
    }  # fmt: skip


def direct(folder: str, requests: list[dict], threads: int) -> dict:
    """The ceiling: every pair of the load through one in-process run() (perfect batching, no HTTP)."""
    import torch

    from jace.scoring import RerankerCrossEncoderClient

    torch.set_num_threads(threads)
    client = RerankerCrossEncoderClient(folder, device="cpu")
    pairs = [(r["query"], t) for r in requests for t in r["texts"]]
    client.run(pairs[:64], show_progress_bar=False)
    started = time.perf_counter()
    client.run(pairs, show_progress_bar=False)
    return {"pairs_per_s": len(pairs) / (time.perf_counter() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each server and of direct run()")
    parser.add_argument("--time-limit", type=float, default=180.0, help="seconds per load run")
    parser.add_argument("--model", default=None, help="model folder (default: all-MiniLM-L6-v2 with a fixed random head)")
    args = parser.parse_args()

    from bench_inference import with_fixed_head

    folder = args.model or with_fixed_head(minilm_path())
    print(machine())
    print(f"model {folder}; {args.threads} torch threads per server")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for clients in args.clients:
        requests = workload(clients * args.requests_per_client, seed=clients)
        pairs = sum(len(r["texts"]) for r in requests)
        ceiling = direct(folder, requests, args.threads)["pairs_per_s"]
        rows.append({"clients": clients, "contender": "direct run() (ceiling)", "pairs_per_s": ceiling, "pairs": pairs})
        jace_port, naive_port = free_port(), free_port()
        contenders = {
            "jace serve": ([sys.executable, "-m", "jace", "serve", folder, "--port", str(jace_port), "--device", "cpu",
                            "--max-concurrent-requests", "1024"], jace_port, None),
            "naive FastAPI + CrossEncoder.predict": ([sys.executable, "-m", "uvicorn", "naive_server:app", "--port",
                                                      str(naive_port), "--log-level", "warning"], naive_port, HERE),
        }  # fmt: skip
        for name, (command, port, cwd) in contenders.items():
            process = start(command, port, {**env, "MODEL": folder}, cwd)
            try:
                asyncio.run(load(f"http://127.0.0.1:{port}", requests[: clients], clients, 60))  # warm-up
                result = asyncio.run(load(f"http://127.0.0.1:{port}", requests, clients, args.time_limit))
            finally:
                stop(process)
            rows.append({"clients": clients, "contender": name, "pairs": pairs, **result})
    table = pd.DataFrame(rows)
    for clients, part in table.groupby("clients"):
        ceiling = part.loc[part.contender.str.startswith("direct"), "pairs_per_s"].iloc[0]
        naive = part.loc[part.contender.str.startswith("naive"), "pairs_per_s"].iloc[0]
        table.loc[part.index, "x_naive"] = part.pairs_per_s / naive
        table.loc[part.index, "pct_of_direct"] = 100 * part.pairs_per_s / ceiling
    print(table.round(2).to_markdown(index=False))


if __name__ == "__main__":
    main()
