"""Training throughput of ``tuneforge train`` against baselines, each run as a whole command.

Every configuration runs as its own command in a subprocess, like ``/usr/bin/time``: the driver
measures the wall time of ``subprocess.run`` with ``time.perf_counter``. So ``wall_seconds``
includes interpreter start, imports, model loading, tokenisation and (for tuneforge) whatever
else the CLI does: evaluating the 64-row validation and test CSVs and saving the model. The
training loop alone is reported as ``loop_examples_per_s``, taken from the child's own JSON
(baselines) or from the ``summary`` event in ``OUTDIR/events.jsonl`` (tuneforge).

Configurations (all batch 32, 1 pass, seed 0, the same seeded sample of the training CSV,
``bench/common.py: load_sample``):
- ``naive``: tutorial loop, every text padded to 256, unfused AdamW, fp32 (``--naive-examples``,
  default 512, because it is slow);
- ``trainer_fp32``: HF Trainer, dynamic padding, ``group_by_length``, fused AdamW (its default);
- ``trainer_fp32_defaults``: HF Trainer at pure defaults (random batches);
- ``trainer_bf16``: HF Trainer with ``bf16=True`` (``--bf16-examples``, default 256; it is
  extremely slow on CPUs without avx512_bf16/amx_bf16; ``--skip-bf16`` records a skip instead);
- ``tuneforge``: ``tuneforge train SAMPLE.csv --validation VAL.csv --test TEST.csv --model
  default --method full --epochs 1 --batch-size 32 --learning-rate 5e-5 --seed 0 --output
  OUTDIR --overwrite``.

Throughput is per example (``examples_per_s = n_examples / wall_seconds``), so configurations
with a different N can be compared, but the fixed start-up cost (~5-10 s) weighs more on a small
N. Wall ratios against ``naive``/``trainer_bf16`` (smaller N) therefore overstate the other
config's advantage somewhat; the loop ratios (``loop_ratio_vs_*``) have no such bias.
With ``--repeats R`` the configurations run R times interleaved (config order within each
round) and the medians are reported.

Run (the full benchmark; minutes to tens of minutes on 2 cores):
    python bench/train_throughput.py --json bench/results/train_throughput.json
Tiny smoke run (seconds):
    python bench/train_throughput.py --n-examples 64 --naive-examples 32 --bf16-examples 16 \
        --json /tmp/train_throughput.json
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
    BENCH_DIR,
    REPO_ROOT,
    RESULTS_DIR,
    env_info,
    load_sample,
    write_csv,
    write_json,
)

ALL_CONFIGS = [
    "naive",
    "trainer_fp32",
    "trainer_fp32_defaults",
    "trainer_bf16",
    "tuneforge",
    # tuneforge with the word-embedding matrix trained too (the baselines train it).
    "tuneforge_train_embeddings",
]
TUNEFORGE_CONFIGS = {"tuneforge": [], "tuneforge_train_embeddings": ["--train-embeddings"]}
BASELINES = ["naive", "trainer_fp32", "trainer_fp32_defaults", "trainer_bf16"]
DEFAULT_TRAIN = Path(__file__).resolve().parents[1].parent / "shared/data/sst2/train.csv"
TAIL_CHARS = 3000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train", type=Path, default=DEFAULT_TRAIN, help="text,label training CSV")
    p.add_argument(
        "--eval-csv",
        type=Path,
        default=None,
        help="source of tuneforge's tiny validation/test CSVs "
        "(default: validation.csv, else test.csv, next to --train)",
    )
    p.add_argument("--eval-rows", type=int, default=64, help="rows in each of VAL.csv/TEST.csv")
    p.add_argument("--n-examples", type=int, default=4096, help="N for trainer_* and tuneforge")
    p.add_argument("--naive-examples", type=int, default=512, help="N for naive (slow)")
    p.add_argument("--bf16-examples", type=int, default=256, help="N for trainer_bf16")
    p.add_argument("--skip-bf16", action="store_true", help="record trainer_bf16 as skipped")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--configs",
        default=",".join(ALL_CONFIGS),
        help=f"comma-separated subset of {','.join(ALL_CONFIGS)}",
    )
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds; medians reported")
    p.add_argument("--tuneforge-bin", default="tuneforge", help="tuneforge executable")
    p.add_argument("--timeout", type=float, default=None, help="seconds per command (none)")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep sample CSVs, child JSONs, logs and tuneforge outputs here (default: temp)",
    )
    p.add_argument(
        "--json", type=Path, default=RESULTS_DIR / "train_throughput.json", help="result file"
    )
    args = p.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(ALL_CONFIGS))
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {ALL_CONFIGS}")
    args.configs = [c for c in ALL_CONFIGS if c in configs]
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.eval_csv is None:
        for name in ("validation.csv", "test.csv"):
            if (args.train.parent / name).exists():
                args.eval_csv = args.train.parent / name
                break
    return args


def n_for(config: str, args: argparse.Namespace) -> int:
    if config == "naive":
        return args.naive_examples
    if config == "trainer_bf16":
        return args.bf16_examples
    return args.n_examples


def build_command(config: str, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The exact command line for one run of ``config``; outputs go under ``run_dir``."""
    n = n_for(config, args)
    shared_args = [
        "--train",
        str(args.train),
        "--n-examples",
        str(n),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
        "--json",
        str(run_dir / "result.json"),
    ]
    if config == "naive":
        return [sys.executable, str(BENCH_DIR / "baselines/naive_loop.py"), *shared_args]
    if config.startswith("trainer_"):
        extra = {
            "trainer_fp32": [],
            "trainer_fp32_defaults": ["--no-group-by-length"],
            "trainer_bf16": ["--bf16"],
        }[config]
        return [sys.executable, str(BENCH_DIR / "baselines/hf_trainer.py"), *shared_args, *extra]
    assert config in TUNEFORGE_CONFIGS
    work = run_dir.parent.parent
    return [
        args.tuneforge_bin,
        "train",
        str(work / "train_sample.csv"),
        "--validation",
        str(work / "val.csv"),
        "--test",
        str(work / "test.csv"),
        "--model",
        "default",
        "--method",
        "full",
        "--epochs",
        "1",
        "--batch-size",
        str(args.batch_size),
        "--learning-rate",
        "5e-5",
        "--seed",
        str(args.seed),
        "--output",
        str(run_dir / "out"),
        "--overwrite",
        *TUNEFORGE_CONFIGS[config],
    ]


def read_summary_event(events_path: Path) -> dict[str, Any] | None:
    """The last ``{"type": "summary", ...}`` line of a tuneforge events.jsonl, or None."""
    summary = None
    with events_path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("type") == "summary":
                summary = event
    return summary


def tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-TAIL_CHARS:]
    except OSError:
        return ""


def run_once(config: str, repeat: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run one configuration once; never raises for a failing child."""
    run_dir = work / "runs" / f"{config}_r{repeat}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = build_command(config, args, run_dir)
    record: dict[str, Any] = {"repeat": repeat, "command": shlex.join(cmd), "ok": False}
    if config in TUNEFORGE_CONFIGS and shutil.which(cmd[0]) is None:
        record["error"] = f"tuneforge executable {cmd[0]!r} not found on PATH"
        return record
    log_path = run_dir / "log.txt"
    with log_path.open("w", encoding="utf-8") as log:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout
            )
            returncode: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = None
        except OSError as exc:  # e.g. not executable
            record["error"] = f"could not start command: {exc}"
            return record
        wall = time.perf_counter() - t0
    record["wall_seconds"] = wall
    record["returncode"] = returncode
    if returncode != 0:
        why = f"timed out after {args.timeout} s" if returncode is None else f"exit {returncode}"
        record["error"] = f"command failed ({why})"
        record["log_tail"] = tail(log_path)
        return record
    try:
        if config in TUNEFORGE_CONFIGS:
            summary = read_summary_event(run_dir / "out" / "events.jsonl")
            if summary is None:
                raise ValueError("no 'summary' event in events.jsonl")
            record["loop_examples_per_s"] = float(summary["train_examples_per_s"])
            record["loop_seconds"] = float(summary["train_seconds"])
            record["child"] = summary
        else:
            child = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
            record["loop_examples_per_s"] = float(child["loop_examples_per_s"])
            record["loop_seconds"] = float(child["loop_seconds"])
            record["child"] = child
    except (OSError, ValueError, KeyError, TypeError) as exc:
        record["error"] = f"could not read the run's result: {type(exc).__name__}: {exc}"
        record["log_tail"] = tail(log_path)
        return record
    record["ok"] = True
    return record


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(config: str, n: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["ok"]]
    wall = median_or_none([r["wall_seconds"] for r in ok])
    loop_eps = median_or_none([r["loop_examples_per_s"] for r in ok])
    loop_s = median_or_none([r["loop_seconds"] for r in ok])
    entry: dict[str, Any] = {
        "name": config,
        "status": "ok" if len(ok) == len(runs) else ("partial" if ok else "failed"),
        "command": runs[0]["command"] if runs else None,
        "n_examples": n,
        "wall_seconds": wall,
        "examples_per_s": n / wall if wall else None,
        "loop_seconds": loop_s,
        "loop_examples_per_s": loop_eps,
        "overhead_seconds": (wall - loop_s) if wall is not None and loop_s is not None else None,
        "repeats_ok": len(ok),
        "errors": [r["error"] for r in runs if not r["ok"]],
        "runs": runs,
    }
    return entry


def add_ratios(entries: list[dict[str, Any]]) -> None:
    """ratio_vs_<b> (wall ex/s) and loop_ratio_vs_<b> (loop ex/s) for every baseline b."""
    by_name = {e["name"]: e for e in entries}
    for entry in entries:
        for base in BASELINES:
            b = by_name.get(base)
            for key, field in (
                ("ratio_vs_", "examples_per_s"),
                ("loop_ratio_vs_", "loop_examples_per_s"),
            ):
                mine = entry.get(field)
                theirs = b.get(field) if b else None
                entry[key + base] = mine / theirs if mine and theirs else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(entries: list[dict[str, Any]]) -> None:
    bases = [b for b in BASELINES if any(e["name"] == b for e in entries)]
    head = ["config", "N", "wall s", "ex/s", "loop ex/s", "overh s"]
    head += [f"vs {b} wall(loop)" for b in bases] + ["status"]
    rows = []
    for e in entries:
        row = [
            e["name"],
            str(e["n_examples"]),
            fmt(e["wall_seconds"], ".1f"),
            fmt(e["examples_per_s"], ".2f"),
            fmt(e["loop_examples_per_s"], ".2f"),
            fmt(e["overhead_seconds"], ".1f"),
        ]
        for b in bases:
            wall_r, loop_r = e.get("ratio_vs_" + b), e.get("loop_ratio_vs_" + b)
            row.append("-" if wall_r is None else f"{wall_r:.2f}x({fmt(loop_r, '.2f')}x)")
        status = e["status"]
        if e.get("skip_reason"):
            status += f": {e['skip_reason']}"
        elif e["errors"]:
            status += f": {e['errors'][0]}"
        row.append(status)
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def prepare_tuneforge_inputs(args: argparse.Namespace, work: Path) -> None:
    """SAMPLE.csv (the same N rows as the baselines) and tiny disjoint VAL.csv / TEST.csv."""
    texts, labels = load_sample(args.train, args.n_examples, args.seed)
    write_csv(work / "train_sample.csv", texts, labels)
    if args.eval_csv is None:
        raise FileNotFoundError(f"no validation.csv or test.csv next to {args.train}")
    ev_texts, ev_labels = load_sample(args.eval_csv, 0, args.seed)
    k = args.eval_rows
    write_csv(work / "val.csv", ev_texts[:k], ev_labels[:k])
    write_csv(work / "test.csv", ev_texts[k : 2 * k], ev_labels[k : 2 * k])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = env_info()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_train_throughput_")
        work = Path(tmp.name)
    else:
        work = args.workdir.resolve()
        work.mkdir(parents=True, exist_ok=True)
    args.train = args.train.resolve()

    to_run = list(args.configs)
    skipped: dict[str, str] = {}
    if "trainer_bf16" in to_run and args.skip_bf16:
        skipped["trainer_bf16"] = "skipped by --skip-bf16"
        to_run.remove("trainer_bf16")
    if "trainer_bf16" in to_run and not env["cpu_bf16_native"]:
        print(
            "note: this CPU has no avx512_bf16/amx_bf16: trainer_bf16 will be very slow "
            "(use --skip-bf16 or a small --bf16-examples)",
            file=sys.stderr,
        )
    if any(c in TUNEFORGE_CONFIGS for c in to_run):
        try:
            prepare_tuneforge_inputs(args, work)
        except (OSError, ValueError) as exc:
            for config in [c for c in to_run if c in TUNEFORGE_CONFIGS]:
                skipped[config] = f"could not prepare inputs: {exc}"
                to_run.remove(config)

    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in to_run}
    try:
        for repeat in range(args.repeats):
            for config in to_run:
                print(f"[round {repeat + 1}/{args.repeats}] {config} ...", flush=True)
                record = run_once(config, repeat, args, work)
                runs[config].append(record)
                wall = record.get("wall_seconds")
                msg = f"ok, wall {wall:.1f} s" if record["ok"] else f"FAILED: {record['error']}"
                print(f"    {msg}", flush=True)

        entries = []
        for config in args.configs:
            if config in skipped:
                entries.append(
                    {
                        **summarize(config, n_for(config, args), []),
                        "status": "skipped",
                        "skip_reason": skipped[config],
                    }
                )
            else:
                entries.append(summarize(config, n_for(config, args), runs[config]))
        add_ratios(entries)
    finally:
        if tmp is not None:
            tmp.cleanup()

    result = {
        "benchmark": "train_throughput",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_csv": str(args.train),
        "eval_csv": str(args.eval_csv) if args.eval_csv else None,
        "eval_rows": args.eval_rows,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "repeats": args.repeats,
        "n_examples": args.n_examples,
        "naive_examples": args.naive_examples,
        "bf16_examples": args.bf16_examples,
        "workdir": str(work) if tmp is None else None,
        "env": env,
        "notes": [
            "wall_seconds: perf_counter around subprocess.run of the whole command (start-up, "
            "imports, model load, tokenisation, training; tuneforge also evaluates "
            f"{args.eval_rows}+{args.eval_rows} rows and saves its output). Median over repeats.",
            "examples_per_s = n_examples / wall_seconds; loop_examples_per_s from the child's "
            "JSON (baselines) or the summary event of OUTDIR/events.jsonl (tuneforge).",
            f"naive uses N={args.naive_examples} and trainer_bf16 N={args.bf16_examples} vs "
            f"N={args.n_examples} for the others: per-example throughput is comparable, but "
            "fixed start-up cost weighs more at small N, so wall ratios against those two "
            "baselines are biased in the other config's favour; loop ratios are not.",
            "ratio_vs_<b> = examples_per_s / b.examples_per_s; "
            "loop_ratio_vs_<b> = loop_examples_per_s / b.loop_examples_per_s.",
        ]
        + (
            []
            if env["cpu_bf16_native"]
            else ["This CPU has no avx512_bf16/amx_bf16: bf16 matmuls are emulated and slow."]
        ),
        "configs": entries,
    }
    print()
    print_table(entries)
    write_json(args.json, result)
    print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
