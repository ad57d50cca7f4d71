"""Accuracy of ``tuneforge train`` at its DEFAULT settings on public datasets.

For every (dataset, method, seed) asked for, this runs one command in a subprocess:
    tuneforge train TRAIN.csv [--validation VAL.csv] [--test TEST.csv] [--method M] [--seed S]
        --output OUTDIR --overwrite [EXTRA ARGS]
with no hyperparameter flags unless you pass them with ``--extra-args``. It measures the wall
time of the command (``time.perf_counter`` around ``subprocess.run``), reads
``OUTDIR/eval.json`` (keys ``validation`` and ``test``, each a metrics dict with ``accuracy``,
``macro_f1``, ...) and, if present, the ``summary`` event of ``OUTDIR/events.jsonl``, prints a
table and writes JSON.

Presets: your copies of the datasets as ``text,label`` CSVs under ``--data-root DIR``, one
folder per dataset (``DIR/sst2/train.csv``, ...); a split the dataset lacks is carved by
tuneforge, and the JSON says which split came from where:
- ``sst2``: train.csv + ``--validation validation.csv``; the test split is carved from train
  (GLUE test is unlabelled), so both the validation and the carved-test metrics are reported;
- ``banking77``: train.csv + ``--test test.csv`` (validation carved);
- ``chnsenticorp``, ``financial_phrasebank``: train/validation/test;
- extra: ``imdb``, ``ag_news``: train.csv + ``--test test.csv``.

``--method`` and ``--seed`` may be repeated; without them the flag is not passed (tuneforge's
default). ``--max-train-rows N`` trains on a seeded, roughly stratified sample of N rows
(written to a temp CSV) for quick runs; ``--max-eval-rows`` does the same for the given
validation/test files. Sampled runs are marked in the JSON and are not comparable to full runs.

Run (full defaults, one dataset per line of the table):
    python bench/accuracy.py --data-root DIR --dataset sst2 --dataset banking77 \
        --dataset chnsenticorp --dataset financial_phrasebank --method full \
        --json bench/results/accuracy.json
Quick smoke run:
    python bench/accuracy.py --dataset sst2 --method full --max-train-rows 256 \
        --max-eval-rows 64 --extra-args "--epochs 1" --json /tmp/accuracy.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DATA_ROOT,
    REPO_ROOT,
    RESULTS_DIR,
    env_info,
    read_csv,
    stratified_sample,
    write_csv,
    write_json,
)

# split -> file name inside the dataset folder, or None when tuneforge must carve it from train.
PRESETS: dict[str, dict[str, str | None]] = {
    "sst2": {"train": "train.csv", "validation": "validation.csv", "test": None},
    "banking77": {"train": "train.csv", "validation": None, "test": "test.csv"},
    "chnsenticorp": {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"},
    "financial_phrasebank": {
        "train": "train.csv",
        "validation": "validation.csv",
        "test": "test.csv",
    },
    "imdb": {"train": "train.csv", "validation": None, "test": "test.csv"},
    "ag_news": {"train": "train.csv", "validation": None, "test": "test.csv"},
}
METRICS = ("accuracy", "macro_f1")
TAIL_CHARS = 3000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--dataset", action="append", required=True, choices=sorted(PRESETS), help="repeatable"
    )
    p.add_argument("--method", action="append", default=None, help="full|head|lora|...; repeat")
    p.add_argument("--seed", action="append", type=int, default=None, help="repeatable")
    p.add_argument(
        "--extra-args", default="", help='passed through to tuneforge train, e.g. "--epochs 1"'
    )
    p.add_argument("--max-train-rows", type=int, default=None, help="stratified train sample")
    p.add_argument("--max-eval-rows", type=int, default=None, help="stratified eval samples")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the row samples")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT)
    p.add_argument("--tuneforge-bin", default="tuneforge")
    p.add_argument("--timeout", type=float, default=None, help="seconds per command (none)")
    p.add_argument(
        "--output-root",
        type=Path,
        default=None,
        help="keep every run's OUTDIR (and sampled CSVs) here (default: temp, deleted)",
    )
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "accuracy.json")
    return p.parse_args(argv)


def prepare_inputs(
    dataset: str, args: argparse.Namespace, work: Path
) -> tuple[dict[str, Path | None], dict[str, Any]]:
    """Paths of the train/validation/test CSVs to pass, sampling them if asked to."""
    folder = args.data_root / dataset
    paths: dict[str, Path | None] = {}
    info: dict[str, Any] = {}
    for split, file_name in PRESETS[dataset].items():
        if file_name is None:
            paths[split] = None
            info[f"{split}_source"] = "carved from train by tuneforge"
            continue
        src = folder / file_name
        limit = args.max_train_rows if split == "train" else args.max_eval_rows
        texts, labels = read_csv(src)
        info[f"{split}_source"] = str(src)
        info[f"{split}_rows_available"] = len(texts)
        if limit is not None and limit < len(texts):
            texts, labels = stratified_sample(texts, labels, limit, args.sample_seed)
            dst = work / "inputs" / dataset / file_name
            write_csv(dst, texts, labels)
            paths[split] = dst
            info[f"{split}_sampled"] = True
        else:
            paths[split] = src
            info[f"{split}_sampled"] = False
        info[f"{split}_rows"] = len(texts)
    return paths, info


def read_summary_event(events_path: Path) -> dict[str, Any] | None:
    """The last ``{"type": "summary", ...}`` line of events.jsonl, or None."""
    if not events_path.exists():
        return None
    summary = None
    for line in events_path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("type") == "summary":
            summary = event
    return summary


def run_one(
    dataset: str,
    method: str | None,
    seed: int | None,
    paths: dict[str, Path | None],
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    tag = f"{dataset}_{method or 'default'}" + ("" if seed is None else f"_s{seed}")
    out_dir = work / "runs" / tag
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [args.tuneforge_bin, "train", str(paths["train"])]
    if paths["validation"] is not None:
        cmd += ["--validation", str(paths["validation"])]
    if paths["test"] is not None:
        cmd += ["--test", str(paths["test"])]
    if method is not None:
        cmd += ["--method", method]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    cmd += ["--output", str(out_dir), "--overwrite", *shlex.split(args.extra_args)]
    record: dict[str, Any] = {
        "dataset": dataset,
        "method": method or "(tuneforge default)",
        "seed": seed,
        "command": shlex.join(cmd),
        "ok": False,
        "wall_seconds": None,
        "validation": None,
        "test": None,
    }
    if shutil.which(cmd[0]) is None:
        record["error"] = f"tuneforge executable {cmd[0]!r} not found on PATH"
        return record
    log_path = work / "logs" / f"{tag}.txt"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout
            )
            returncode: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = None
        except OSError as exc:
            record["error"] = f"could not start command: {exc}"
            return record
        record["wall_seconds"] = time.perf_counter() - t0
    record["returncode"] = returncode
    log_tail = log_path.read_text(encoding="utf-8", errors="replace")[-TAIL_CHARS:]
    if returncode != 0:
        why = f"timed out after {args.timeout} s" if returncode is None else f"exit {returncode}"
        record["error"] = f"command failed ({why})"
        record["log_tail"] = log_tail
        return record
    try:
        evaluation = json.loads((out_dir / "eval.json").read_text(encoding="utf-8"))
        record["validation"] = evaluation.get("validation")
        record["test"] = evaluation.get("test")
    except (OSError, ValueError, AttributeError) as exc:
        record["error"] = f"could not read eval.json: {type(exc).__name__}: {exc}"
        record["log_tail"] = log_tail
        return record
    summary = read_summary_event(out_dir / "events.jsonl")
    if summary is not None:
        record["train_seconds"] = summary.get("train_seconds")
        record["train_examples_per_s"] = summary.get("train_examples_per_s")
    record["ok"] = True
    return record


def metric(record: dict[str, Any], split: str, name: str) -> float | None:
    metrics = record.get(split)
    value = metrics.get(name) if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) else None


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and stdev over seeds of each (dataset, method)'s metrics."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r["ok"]:
            groups.setdefault((r["dataset"], r["method"]), []).append(r)
    out = []
    for (dataset, method), group in groups.items():
        entry: dict[str, Any] = {"dataset": dataset, "method": method, "n_runs": len(group)}
        for split in ("validation", "test"):
            for name in METRICS:
                values = [v for r in group if (v := metric(r, split, name)) is not None]
                key = f"{split}_{name}"
                entry[key + "_mean"] = statistics.fmean(values) if values else None
                entry[key + "_stdev"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(entry)
    return out


def print_table(records: list[dict[str, Any]]) -> None:
    head = ["dataset", "method", "seed", "val acc", "val F1", "test acc", "test F1", "wall s"]
    head.append("status")
    rows = []
    for r in records:

        def cell(split: str, name: str, r: dict[str, Any] = r) -> str:
            value = metric(r, split, name)
            return "-" if value is None else f"{value:.4f}"

        rows.append(
            [
                r["dataset"],
                r["method"],
                "-" if r["seed"] is None else str(r["seed"]),
                cell("validation", "accuracy"),
                cell("validation", "macro_f1"),
                cell("test", "accuracy"),
                cell("test", "macro_f1"),
                "-" if r["wall_seconds"] is None else f"{r['wall_seconds']:.1f}",
                "ok" if r["ok"] else f"FAILED: {r.get('error')}",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    methods: list[str | None] = list(args.method) if args.method else [None]
    seeds: list[int | None] = list(args.seed) if args.seed else [None]
    tmp = None
    if args.output_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_accuracy_")
        work = Path(tmp.name)
    else:
        work = args.output_root.resolve()
        work.mkdir(parents=True, exist_ok=True)
    args.data_root = args.data_root.resolve()

    records: list[dict[str, Any]] = []
    try:
        for dataset in dict.fromkeys(args.dataset):
            paths, info = prepare_inputs(dataset, args, work)
            for method in methods:
                for seed in seeds:
                    label = f"{dataset} method={method or 'default'} seed={seed}"
                    print(f"{label} ...", flush=True)
                    record = run_one(dataset, method, seed, paths, args, work)
                    record.update(info)
                    records.append(record)
                    if record["ok"]:
                        print(f"    ok, wall {record['wall_seconds']:.1f} s", flush=True)
                    else:
                        print(f"    FAILED: {record['error']}", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    result = {
        "benchmark": "accuracy",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_root": str(args.data_root),
        "extra_args": args.extra_args,
        "max_train_rows": args.max_train_rows,
        "max_eval_rows": args.max_eval_rows,
        "sample_seed": args.sample_seed,
        "output_root": str(work) if tmp is None else None,
        "env": env_info(),
        "notes": [
            "tuneforge defaults unless extra_args says otherwise; wall_seconds is perf_counter "
            "around the whole tuneforge train command (training, evaluation, saving).",
            "validation/test metrics are eval.json's; a split whose *_source says 'carved "
            "from train by tuneforge' was carved from train.csv by tuneforge.",
        ],
        "runs": records,
        "aggregates": aggregate(records),
    }
    print()
    print_table(records)
    write_json(args.json, result)
    print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
