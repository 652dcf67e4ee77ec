"""A real `jace serve` for the server tests: a subprocess on a free loopback port, waited on until healthy."""

import os
import signal
import socket
import subprocess
import sys
import threading

import httpx

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
QUERY = "日本で梅雨がないのは？"
TEXTS = ["梅雨は東アジアの気象です。北海道には梅雨がない。", "猫が好きです。犬も好きです。", "今日は晴れです。"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``jace serve ARGS`` on a free loopback port; ready (warm-up batch done) when the constructor returns."""

    def __init__(self, *args, env=None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "jace", "serve", *map(str, args), "--port", str(self.port), "--device", "cpu"]
        self.process = subprocess.Popen(command, env={**ENV, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        started = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                self.log.append(line)
                if "Application startup complete" in line:
                    started.set()
            started.set()  # the process ended

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not started.wait(timeout=120) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log))
        assert httpx.get(self.url + "/health", timeout=5).status_code == 200, "".join(self.log)

    def post(self, path, body, **kwargs):
        return httpx.post(self.url + path, json=body, timeout=60, **kwargs)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
