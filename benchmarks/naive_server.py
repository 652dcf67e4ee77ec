"""What a user would write in an afternoon: a FastAPI app that calls CrossEncoder.predict inside each
request. The peer of `jace serve` in bench_serve.py (not part of the jace package).

Run:  MODEL=path/to/model uvicorn naive_server:app --port 8081   (from benchmarks/)
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import CrossEncoder

model = CrossEncoder(os.environ["MODEL"], device="cpu")
app = FastAPI()


class Rerank(BaseModel):
    query: str
    texts: list[str]


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/rerank")
def rerank(body: Rerank) -> list[dict]:
    scores = model.predict([(body.query, text) for text in body.texts])
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    return [{"index": i, "score": float(scores[i])} for i in order]
