"""Training throughput by thread count and OpenMP wait policy, idle and under load.

Each cell is a fresh Python process (the OpenMP wait policy is read once, when torch
loads) that fine-tunes the default model (all weights, AdamW, the precision ``auto``
picks) on the first rows of an SST-2 sample for a fixed number of steps and reports
examples/s over the steps after the warm-up. ``threads=default`` is tuneforge's own
choice (``choose_threads``), made inside the cell, under the same load.

Loads: ``idle`` (nothing added by the benchmark; say what else ran: the load average is
recorded), ``busy2`` (two ``python -c "while 1: pass"`` processes), ``taskset0`` (the cell
pinned to CPU 0) and ``quota1`` (a cgroup with a CPU quota of one CPU, when this process may
create one). Run from the repository root::

    python bench/threads.py --data SST2_TRAIN_CSV --out bench/results/threads.json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

POLICIES = {"spin": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}
BUSY_LOOP = [sys.executable, "-c", "while 1: pass"]


def run_cell(data: str, rows: int, steps: int, warmup: int, batch: int, threads: str) -> dict:
    """One measurement (runs inside the child process)."""
    import numpy as np
    import torch

    from tuneforge.data.encode import collate, encode_texts
    from tuneforge.models.classifier import build_classifier, load_tokenizer
    from tuneforge.models.registry import resolve_base_model
    from tuneforge.training.device import cpu_has_fast_bf16
    from tuneforge.training.threads import apply_threads

    choice = apply_threads(None if threads == "default" else int(threads))
    with open(data, newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))[:rows]
    names = sorted({r["label"] for r in table})
    base = resolve_base_model("default")
    tokenizer = load_tokenizer(base.path)
    encoded = encode_texts(tokenizer, [r["text"] for r in table], 128)
    targets = torch.tensor([names.index(r["label"]) for r in table])
    torch.manual_seed(0)
    model = build_classifier(base.path, names)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    dtype = torch.bfloat16 if cpu_has_fast_bf16() else None
    pad = tokenizer.pad_token_id or 0
    rng = np.random.default_rng(0)
    times = []
    for step in range(warmup + steps):
        idx = rng.choice(len(table), size=batch, replace=False)
        inputs = collate([encoded.ids[i] for i in idx], pad)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(**inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), targets[idx])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return {
        "threads": choice.threads,
        "reason": choice.reason,
        "examples_per_s": round(batch * len(times) / sum(times), 2),
        "step_ms_median": round(statistics.median(times) * 1000, 1),
        "precision": "bf16" if dtype is not None else "fp32",
    }


@contextlib.contextmanager
def busy_loops(n: int) -> Iterator[None]:
    procs = [subprocess.Popen(BUSY_LOOP) for _ in range(n)]
    try:
        time.sleep(1.0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def make_quota_cgroup(cpus: float) -> Path | None:
    """A cgroup limited to ``cpus`` CPUs (v2 ``cpu.max`` or v1 CFS quota), or None."""
    name = f"tuneforge-bench-{os.getpid()}"
    v2 = Path("/sys/fs/cgroup")
    try:
        if (v2 / "cgroup.controllers").is_file():
            group = v2 / name
            group.mkdir()
            (group / "cpu.max").write_text(f"{int(cpus * 100000)} 100000")
            return group
        v1 = v2 / "cpu"
        if (v1 / "cpu.cfs_quota_us").is_file():
            group = v1 / name
            group.mkdir()
            (group / "cpu.cfs_period_us").write_text("100000")
            (group / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
            return group
    except OSError:
        return None
    return None


def child(args: argparse.Namespace, threads: str, policy: str, prefix: list[str]) -> dict:
    env = {**os.environ, **POLICIES[policy]}
    if policy == "spin":
        env.pop("OMP_WAIT_POLICY", None)
    cmd = [
        *prefix,
        sys.executable,
        __file__,
        "--cell",
        threads,
        "--data",
        args.data,
        "--rows",
        str(args.rows),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch",
        str(args.batch),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cell failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_description() -> dict:
    text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(info.get("Flags", "").split())
    return {
        "model": info.get("Model name", "?").strip(),
        "cpus": os.cpu_count(),
        "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/sst2/train.csv")
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--loads", default="idle,busy2,taskset0,quota1")
    parser.add_argument("--threads", default="1,2,default")
    parser.add_argument("--policies", default="spin,passive")
    parser.add_argument("--out", default="bench/results/threads.json")
    args = parser.parse_args()
    if args.cell:
        print(
            json.dumps(
                run_cell(args.data, args.rows, args.steps, args.warmup, args.batch, args.cell)
            )
        )
        return

    results = []

    def record(load: str, threads: str, policy: str, prefix: list[str]) -> None:
        cell = child(args, threads, policy, prefix)
        row = {
            "load": load,
            "threads_arg": threads,
            "policy": policy,
            "loadavg_1m": round(os.getloadavg()[0], 2),
            **cell,
        }
        results.append(row)
        print(json.dumps(row), flush=True)

    grid = [(t, p) for p in args.policies.split(",") for t in args.threads.split(",")]
    for load in args.loads.split(","):
        if load == "idle":
            for t, p in grid:
                record(load, t, p, [])
        elif load == "busy2":
            with busy_loops(2):
                for t, p in grid:
                    record(load, t, p, [])
        elif load == "taskset0":
            for p in args.policies.split(","):
                record(load, "default", p, ["taskset", "-c", "0"])
        elif load == "quota1":
            group = make_quota_cgroup(1.0)
            if group is None:
                print(json.dumps({"load": load, "skipped": "cannot create a cgroup here"}))
                continue
            try:
                enter = f'echo $$ > {group / "cgroup.procs"} && exec "$@"'
                for p in args.policies.split(","):
                    record(load, "default", p, ["sh", "-c", enter, "sh"])
            finally:
                with contextlib.suppress(OSError):
                    group.rmdir()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "cpu": cpu_description(),
                "command": " ".join(sys.argv),
                "settings": {
                    "rows": args.rows,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "batch": args.batch,
                    "model": "default",
                    "method": "full",
                },
                "uptime_end": subprocess.run(
                    ["uptime"], capture_output=True, text=True, check=False
                ).stdout.strip(),
                "cells": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
