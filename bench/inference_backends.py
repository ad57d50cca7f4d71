"""In-process inference: every backend of one bundle, against HF ``pipeline``, in one run.

For each backend (torch fp32, ONNX Runtime fp32, ONNX Runtime int8 — whichever the bundle
has; run ``tuneforge export BUNDLE --int8`` first) and for the HF ``pipeline`` baseline:
- batch-1 latency: p50/p95 over single-text calls on the first ``--n-single`` texts;
- batch-32 throughput: all texts in batches of 32, texts/s (median of ``--repeats``);
- accuracy on the labelled file;
- batch invariance: each text alone vs inside batches of 32 mixed-length texts (in file
  order, not length-sorted): label agreement and the largest score difference.

Run:
    python bench/inference_backends.py BUNDLE --data SST2_VALIDATION_CSV \
        --json bench/results/inference_backends.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import env_info, read_csv, write_json


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure_predictor(predictor, texts, labels, n_single: int, repeats: int) -> dict:
    """Latency, throughput, accuracy and batch invariance of one backend."""
    predictor.probabilities(texts[:8], batch_size=8)  # warm-up
    singles = []
    alone = []
    for text in texts:
        t = time.perf_counter()
        alone.append(predictor.probabilities([text], batch_size=1)[0])
        if len(singles) < n_single:
            singles.append(time.perf_counter() - t)
    alone = np.vstack(alone)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        probs = predictor.probabilities(texts, batch_size=32)
        runs.append(time.perf_counter() - t)
    # batches of 32 in file order: mixed lengths, padded to each batch's longest text
    mixed = np.vstack(
        [
            predictor.probabilities(texts[i : i + 32], batch_size=32)
            for i in range(0, len(texts), 32)
        ]
    )
    names = predictor.labels
    predicted = [names[i] for i in probs.argmax(axis=1)]
    return {
        "backend": predictor.backend_name,
        "batch1_ms_p50": round(percentile(singles, 50) * 1000, 3),
        "batch1_ms_p95": round(percentile(singles, 95) * 1000, 3),
        "batch32_texts_per_s": round(len(texts) / statistics.median(runs), 1),
        "accuracy": float(np.mean([p == y for p, y in zip(predicted, labels, strict=True)])),
        "invariance_label_agreement": float(np.mean(alone.argmax(axis=1) == mixed.argmax(axis=1))),
        "invariance_max_score_diff": float(np.abs(alone - mixed).max()),
        "invariance_label_flips": int(np.sum(alone.argmax(axis=1) != mixed.argmax(axis=1))),
    }


def measure_pipeline(bundle: Path, texts, labels, n_single: int, repeats: int) -> dict:
    """The usual deployment: a transformers ``pipeline`` on the bundle's model."""
    from transformers import pipeline

    clf = pipeline(
        "text-classification",
        model=str(bundle / "model"),
        tokenizer=str(bundle / "tokenizer"),
        device=-1,
    )
    clf(texts[:8])
    singles = []
    for text in texts[:n_single]:
        t = time.perf_counter()
        clf(text, truncation=True)
        singles.append(time.perf_counter() - t)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = clf(texts, batch_size=32, truncation=True)
        runs.append(time.perf_counter() - t)
    return {
        "backend": "hf-pipeline",
        "batch1_ms_p50": round(percentile(singles, 50) * 1000, 3),
        "batch1_ms_p95": round(percentile(singles, 95) * 1000, 3),
        "batch32_texts_per_s": round(len(texts) / statistics.median(runs), 1),
        "accuracy": float(np.mean([o["label"] == y for o, y in zip(out, labels, strict=True)])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", required=True, help="Labelled CSV (text,label).")
    parser.add_argument("--n-single", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch/ORT threads.")
    parser.add_argument(
        "--no-spin",
        action="store_true",
        help="ONNX Runtime threads sleep between operators (the server's setting).",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from tuneforge.inference.backends import onnx_path
    from tuneforge.inference.predictor import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    texts, labels = read_csv(args.data)
    results = []
    for backend in ("torch", "onnx", "onnx-int8"):
        if backend != "torch" and not onnx_path(args.bundle, backend).is_file():
            print(f"skipping {backend}: not exported", file=sys.stderr)
            continue
        predictor = Predictor.load(
            args.bundle, backend=backend, device="cpu", threads=args.threads, spin=not args.no_spin
        )
        results.append(measure_predictor(predictor, texts, labels, args.n_single, args.repeats))
        print(results[-1], flush=True)
        del predictor
    if (args.bundle / "model").is_dir():
        results.append(measure_pipeline(args.bundle, texts, labels, args.n_single, args.repeats))
        print(results[-1], flush=True)
    ref = next(r for r in results if r["backend"] == "torch")
    for r in results:
        r["accuracy_drop_vs_torch"] = round(ref["accuracy"] - r["accuracy"], 6)
    header = f"{'backend':<12} {'b1 p50 ms':>10} {'b1 p95 ms':>10} {'b32 /s':>9} {'acc':>7} "
    header += f"{'flips':>6} {'max diff':>9}"
    print(header)
    for r in results:
        flips = r.get("invariance_label_flips", "")
        diff = r.get("invariance_max_score_diff", 0.0)
        print(
            f"{r['backend']:<12} {r['batch1_ms_p50']:>10.2f} {r['batch1_ms_p95']:>10.2f} "
            f"{r['batch32_texts_per_s']:>9.1f} {r['accuracy']:>7.4f} {flips:>6} {diff:>9.2e}"
        )
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "inference_backends",
                "command": " ".join(sys.argv),
                "bundle": str(args.bundle),
                "data": args.data,
                "n_texts": len(texts),
                "onnx_spin": not args.no_spin,
                "export": json.loads((args.bundle / "onnx" / "export.json").read_text())
                if (args.bundle / "onnx" / "export.json").is_file()
                else None,
                "results": results,
                "env": env_info(),
            },
        )


if __name__ == "__main__":
    main()
