"""The usual way a fine-tuned classifier gets served: FastAPI + one HF ``pipeline`` call per
request. The baseline of bench/serve_throughput.py.

    python bench/baselines/naive_server.py BUNDLE --port 8101
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Body(BaseModel):
    input: str


def build(bundle: Path) -> FastAPI:
    from transformers import pipeline

    clf = pipeline(
        "text-classification",
        model=str(bundle / "model"),
        tokenizer=str(bundle / "tokenizer"),
        device=-1,
    )
    app = FastAPI()

    @app.post("/classify")
    def classify(body: Body) -> dict:
        out = clf(body.input, truncation=True)[0]
        return {"label": out["label"], "score": out["score"]}

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--port", type=int, default=8101)
    args = parser.parse_args()
    uvicorn.run(build(args.bundle), host="127.0.0.1", port=args.port, log_level="warning")
