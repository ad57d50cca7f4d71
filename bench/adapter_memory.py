"""Memory and first-request latency of many adapter bundles hosted on one base model.

Makes N adapter bundles from one LoRA bundle (copies whose adapter weights get independent
random perturbations, so each is a distinct model with its own tensors), then, in a fresh
process per N, loads them into the server's model cache (adapters share one base) and
classifies one text with each. Reports the process memory (RSS) the models add — after
that one request, and again after every weight was read once (all pages of the
memory-mapped weights resident, as in a server that has run a while) — the
first-request latency (load + classify) per model, and, in the same run, the memory of ONE
full (non-adapter) bundle loaded the same way. Last, with a cache that holds fewer models than
there are, a request for an evicted model must still succeed.

Run:
    python bench/adapter_memory.py --lora LORA_BUNDLE --full FULL_BUNDLE --counts 1 10 50 \
        --json bench/results/adapter_memory.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import env_info, write_json


def rss_bytes(field: str = "VmRSS") -> int:
    """Resident memory of this process: ``VmRSS`` (all), ``RssAnon`` (private heap) or
    ``RssFile`` (pages of memory-mapped files, such as safetensors weights)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def touch_weights(cache) -> None:
    """Read every weight of every loaded model once, as a long-running server eventually
    does: the untouched pages of a memory-mapped embedding matrix become resident."""
    import torch

    with torch.no_grad():
        for model_id in cache.loaded():
            model = getattr(cache.get(model_id, Path()).predictor.backend, "model", None)
            for tensor in model.state_dict().values() if model is not None else ():
                float(tensor.float().sum())


def trim_heap() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)


def make_copies(lora: Path, n: int, root: Path) -> list[Path]:
    """n distinct adapter bundles: the adapter weights of each get their own noise."""
    import torch
    from safetensors.torch import load_file, save_file

    out = []
    for i in range(n):
        dest = root / f"adapter-{i:03d}"
        shutil.copytree(lora, dest, ignore=shutil.ignore_patterns("onnx", ".*"))
        weights = dest / "adapter" / "adapter_model.safetensors"
        tensors = load_file(weights)
        gen = torch.Generator().manual_seed(i)
        noisy = {
            k: v + 1e-3 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
            for k, v in tensors.items()
        }
        save_file(noisy, weights)
        out.append(dest)
    return out


def child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: load the bundles, print one JSON line."""
    from tuneforge.server.model_cache import CacheSettings, ModelCache

    bundles = [Path(p) for p in args.bundles]
    cache = ModelCache(CacheSettings(backend="torch", max_bytes=args.max_bytes))
    # Warm up the libraries (lazy imports, allocator arenas) on a throwaway copy of the same
    # kind of bundle, then drop it: RSS below counts the models, not the first-use costs.
    import gc

    warm = ModelCache(CacheSettings(backend="torch"))
    warm.get("warm-up", Path(args.warmup)).predictor.predict("warm up")
    warm.close()
    del warm
    gc.collect()
    trim_heap()  # what the warm-up freed goes back to the OS, or the models reuse it unseen
    before = {f: rss_bytes(f) for f in ("VmRSS", "RssAnon", "RssFile")}
    first = []
    for i, bundle in enumerate(bundles):
        t = time.perf_counter()
        loaded = cache.get(f"m{i}", bundle)
        loaded.predictor.predict("a surprisingly good film")
        first.append(time.perf_counter() - t)
    after = {f: rss_bytes(f) for f in ("VmRSS", "RssAnon", "RssFile")}
    touch_weights(cache)
    resident = {f: rss_bytes(f) for f in ("VmRSS", "RssAnon", "RssFile")}

    def added(now: dict[str, int], field: str) -> float:
        return round((now[field] - before[field]) / 2**20, 1)

    result = {
        "n": len(bundles),
        "rss_added_mb": added(after, "VmRSS"),
        "rss_anon_added_mb": added(after, "RssAnon"),
        "rss_file_added_mb": added(after, "RssFile"),
        "resident_rss_added_mb": added(resident, "VmRSS"),
        "resident_rss_anon_added_mb": added(resident, "RssAnon"),
        "resident_rss_file_added_mb": added(resident, "RssFile"),
        "cache_accounted_mb": round(cache.describe()["used_bytes"] / 2**20, 3),
        "cache_accounted_bytes": cache.describe()["used_bytes"],
        "loaded": len(cache.loaded()),
        "evictions": cache.evictions,
        "first_request_ms_median": round(statistics.median(first) * 1000, 1),
        "first_request_ms_first": round(first[0] * 1000, 1),
        "first_request_ms_max": round(max(first) * 1000, 1),
    }
    if args.reask:
        evicted = next(i for i in range(len(bundles)) if f"m{i}" not in cache.loaded())
        t = time.perf_counter()
        pred = cache.get(f"m{evicted}", bundles[evicted]).predictor.predict("a good film")
        result["evicted_model_request_ms"] = round((time.perf_counter() - t) * 1000, 1)
        result["evicted_model_answer"] = pred.label
    print(json.dumps(result), flush=True)


def run_child(
    bundles: list[Path], warmup: Path, max_bytes: int = 2**40, reask: bool = False
) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--warmup",
        str(warmup),
        "--max-bytes",
        str(max_bytes),
        *(["--reask"] if reask else []),
        "--bundles",
        *map(str, bundles),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--lora", type=Path)
    parser.add_argument("--full", type=Path)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundles", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--max-bytes", type=int, default=2**40, help=argparse.SUPPRESS)
    parser.add_argument("--reask", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    root = Path(tempfile.mkdtemp(prefix="tf-adapters-"))
    try:
        copies = make_copies(args.lora, max(args.counts), root)
        full = run_child([args.full], args.full)
        print("one full model:", full, flush=True)
        rows = []
        for n in args.counts:
            row = run_child(copies[:n], args.lora)
            row["ratio_to_one_full_model"] = round(row["rss_added_mb"] / full["rss_added_mb"], 3)
            row["resident_ratio_to_one_full_model"] = round(
                row["resident_rss_added_mb"] / full["resident_rss_added_mb"], 3
            )
            print(row, flush=True)
            rows.append(row)
        # a cache that holds ~half the adapters: the 51st request, for an evicted one, works
        budget = rows[-1]["cache_accounted_bytes"] // 2
        evict = run_child(copies[: max(args.counts)], args.lora, budget, reask=True)
        evict["cache_budget_bytes"] = budget
        print("with eviction:", evict, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "adapter_memory",
                "command": " ".join(sys.argv),
                "lora_bundle": str(args.lora),
                "full_bundle": str(args.full),
                "one_full_model": full,
                "adapters": rows,
                "eviction": evict,
                "env": env_info(),
            },
        )


if __name__ == "__main__":
    main()
