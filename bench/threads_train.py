"""Whole ``tuneforge train`` commands with the default thread choice vs fixed ``--threads``,
on an idle machine and beside two busy processes.

Each cell is a fresh ``tuneforge train`` process (default model, full fine-tuning, the first
320 rows of an SST-2-style CSV, 2 epochs, batch 16, patience 0, ``--export none``); its
speed is the training loop's examples/s from the bundle's summary event, and the plan's
``threads``/``threads_reason`` say what the default chose. ``busy2`` runs two
``python -c "while 1: pass"`` beside every cell of that load; cells run in the given order,
``--repeats`` times.

    python bench/threads_train.py --data sst2/train.csv --loads idle,busy2 \\
        --cells default,t2,t1 --repeats 3 --out bench/results/threads_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_ROOT, cpu_info, write_json

CELLS = {
    "default": ([], {}),
    "t1": (["--threads", "1"], {}),
    "t2": (["--threads", "2"], {}),
    "default-passive": ([], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "t2-spin": (["--threads", "2"], {"OMP_WAIT_POLICY": "ACTIVE"}),
}


@contextmanager
def busy(n: int):
    """``n`` CPU-bound processes for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(n)]
    try:
        time.sleep(2 if n else 0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_cell(data: Path, name: str, workdir: Path) -> dict:
    args, env = CELLS[name]
    out = workdir / f"bundle-{name}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "tuneforge", "train", str(data), "--epochs", "2"]
    cmd += ["--batch-size", "16", "--patience", "0", "--export", "none", "-q"]
    cmd += ["--output", str(out), *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if key not in env:
            full_env.pop(key, None)
    subprocess.run(cmd, check=True, env=full_env, capture_output=True)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    plan = next(e for e in events if e["type"] == "plan")
    return {
        "cell": name,
        "examples_per_s": events[-1]["train_examples_per_s"],
        "threads": plan["threads"],
        "threads_reason": plan["threads_reason"],
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DATA_ROOT / "sst2" / "train.csv",
        help="Your copy of the SST-2 train split (CSV with text,label).",
    )
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--loads", default="idle,busy2")
    parser.add_argument("--cells", default="default,t2,t1")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/threads_train.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="threads-train-"))
    lines = args.data.read_text(encoding="utf-8").splitlines()[: args.rows + 1]
    data = workdir / "train.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = []
    for load in args.loads.split(","):
        with busy(2 if load == "busy2" else 0):
            for _ in range(args.repeats):
                for name in args.cells.split(","):
                    cell = {"load": load, **run_cell(data, name, workdir)}
                    print(json.dumps(cell), flush=True)
                    results.append(cell)
    write_json(args.out, {"cpu": cpu_info(), "command": sys.argv, "cells": results})


if __name__ == "__main__":
    main()
