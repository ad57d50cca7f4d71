"""A 200-row, 5-class OpenAI-style fine-tuning job end to end, measured from the outside.

Builds an OpenAI chat JSONL of 5 banking77 intents x 40 rows (fixed seed), starts a real
``tuneforge serve`` process on loopback, fine-tunes the default model through the official
``openai`` client with default hyperparameters, then classifies every banking77 test row of
those 5 intents through ``chat.completions`` (top-5 logprobs) and scores the answers:
accuracy, macro-F1 and expected calibration error (15 equal-width confidence bins, the
definition tuneforge's own evaluation uses). Also records what the job reported (epochs
planned and trained, its own carved test split's metrics, warnings) and the wall time.

    python bench/small_data_job.py --src src --out bench/results/small_data_job.json

``--src`` is the source tree the server runs (point it at another checkout to measure a
baseline with the same script).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_ROOT, read_csv, write_json

INTENTS = ("card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "age_limit")
PER_CLASS = 40
SYSTEM = "Classify the banking customer's request by intent."


def build_files(data_root: Path, workdir: Path, seed: int) -> tuple[Path, list[str], list[str]]:
    """The training chat JSONL (5 x 40 rows) and the test texts/labels of the 5 intents."""
    texts, labels = read_csv(data_root / "banking77" / "train.csv")
    rng = random.Random(seed)
    rows = []
    for intent in INTENTS:
        pool = [t for t, lab in zip(texts, labels, strict=True) if lab == intent]
        rows += [(t, intent) for t in rng.sample(pool, PER_CLASS)]
    rng.shuffle(rows)
    train = workdir / "banking5_train.jsonl"
    with train.open("w", encoding="utf-8") as fh:
        for text, label in rows:
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": text},
                {"role": "assistant", "content": label},
            ]
            fh.write(json.dumps({"messages": messages}) + "\n")
    test_texts, test_labels = read_csv(data_root / "banking77" / "test.csv")
    keep = [i for i, lab in enumerate(test_labels) if lab in INTENTS]
    return train, [test_texts[i] for i in keep], [test_labels[i] for i in keep]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def macro_f1(y_true: list[str], y_pred: list[str]) -> float:
    scores = []
    for c in INTENTS:
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(y_true, y_pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(y_true, y_pred, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (confidence > lo) & (confidence <= hi)
        if mask.any():
            total += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", type=Path, default=Path("src"), help="Source tree to serve.")
    parser.add_argument("--out", type=Path, default=Path("bench/results/small_data_job.json"))
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--seed", type=int, default=0, help="Row sampling seed.")
    parser.add_argument("--label", default="", help="A note stored with the result.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="Training threads (the num_threads hyperparameter); default: the server's choice.",
    )
    args = parser.parse_args()
    import openai

    workdir = Path(tempfile.mkdtemp(prefix="small-data-job-"))
    train, test_texts, test_labels = build_files(args.data_root, workdir, args.seed)
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve()), "HF_HUB_OFFLINE": "1"}
    tf = [sys.executable, "-m", "tuneforge"]
    data_dir = workdir / "data"
    key = subprocess.run(
        [*tf, "keys", "create", "--project", "bench", "--scopes", "train,infer,admin",
         "--data-dir", str(data_dir)],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    port = free_port()
    log = (workdir / "serve.log").open("w")
    server = subprocess.Popen(
        [*tf, "serve", "--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=120)
        deadline = time.monotonic() + 120
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        started = time.monotonic()
        file = client.files.create(file=train.open("rb"), purpose="fine-tune")
        extra = {"hyperparameters": {"num_threads": args.threads}} if args.threads else {}
        job = client.fine_tuning.jobs.create(
            model="all-MiniLM-L6-v2", training_file=file.id, extra_body=extra
        )
        while job.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)
            job = client.fine_tuning.jobs.retrieve(job.id)
        job_seconds = time.monotonic() - started
        events = [e.model_dump() for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)]
        if job.status != "succeeded":
            raise SystemExit(f"job {job.status}: {job.error}")
        predictions, confidences = [], []
        for text in test_texts:
            reply = client.chat.completions.create(
                model=job.fine_tuned_model,
                messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
                logprobs=True,
                top_logprobs=5,
            )
            choice = reply.choices[0]
            predictions.append(choice.message.content)
            confidences.append(float(np.exp(choice.logprobs.content[0].top_logprobs[0].logprob)))
        correct = np.array([p == t for p, t in zip(predictions, test_labels, strict=True)])
    finally:
        server.terminate()
        server.wait(timeout=60)
    summary = next((e["data"] for e in events if "Training finished" in e["message"]), {})
    result = {
        "label": args.label,
        "threads": args.threads or "default",
        "source": str(args.src.resolve()),
        "intents": INTENTS,
        "train_rows": PER_CLASS * len(INTENTS),
        "test_rows": len(test_texts),
        "test_class_counts": dict(Counter(test_labels)),
        "test_accuracy": round(float(correct.mean()), 4),
        "test_macro_f1": round(macro_f1(test_labels, predictions), 4),
        "test_ece": round(ece(np.array(confidences), correct.astype(float)), 4),
        "mean_confidence": round(float(np.mean(confidences)), 4),
        "chance_accuracy": round(1 / len(INTENTS), 4),
        "job_wall_seconds": round(job_seconds, 1),
        "hyperparameters": job.hyperparameters.model_dump(),
        "trained_tokens": job.trained_tokens,
        "job_summary": summary,
        "warnings": [e["message"] for e in events if e.get("level") == "warn"],
        "event_messages": [e["message"] for e in reversed(events) if e.get("type") != "metrics"],
        "cpu": _cpu(),
        "load_average_at_end": os.getloadavg(),
    }
    write_json(args.out, result)
    keys = ("test_accuracy", "test_macro_f1", "test_ece", "job_wall_seconds")
    print(json.dumps({k: result[k] for k in keys} | {"summary": summary}, indent=1))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    return "unknown"


if __name__ == "__main__":
    main()
