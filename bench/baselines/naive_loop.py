"""Baseline: the "tutorial loop" for fine-tuning a BERT-family classifier on CPU.

What it does (deliberately naive, as in most tutorials):
- the tokenizer pads EVERY text to ``max_length=256`` (``padding="max_length"``), once, upfront;
- ``AutoModelForSequenceClassification`` from tuneforge's default model (all-MiniLM-L6-v2);
- a plain Python loop over random batches (``DataLoader(shuffle=True)``, batch 32), one pass;
- ``torch.optim.AdamW(lr=5e-5)``, otherwise default settings: ``fused=None, foreach=None``,
  which on CPU resolves to the single-tensor implementation (neither fused nor foreach);
- fp32, no length grouping, no scheduler, no evaluation, no saving.

What it measures: ``loop_seconds`` is the wall time (``time.perf_counter``) of the training loop
only (all batches: forward, backward, optimizer step); model loading and tokenisation are
excluded and reported as ``setup_seconds``. ``loop_examples_per_s = n_examples / loop_seconds``.
The examples are the first N rows of a seeded shuffle of the CSV (``common.load_sample``), the
same rows every other benchmark script uses for the same (CSV, N, seed).

Run (tiny size, a few seconds):
    python bench/baselines/naive_loop.py --train SST2_TRAIN_CSV \
        --n-examples 64 --batch-size 32 --seed 0 --json /tmp/naive.json
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    set_seed,
)

from common import default_model_path, env_info, label_mapping, load_sample, write_json  # noqa: E402

NAME = "naive"
MAX_LENGTH = 256
LEARNING_RATE = 5e-5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train", required=True, type=Path, help="text,label CSV")
    p.add_argument("--n-examples", type=int, required=True, help="rows of the seeded shuffle")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="model dir (default: tuneforge's default)")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    texts, label_names = load_sample(args.train, args.n_examples, args.seed)
    mapping = label_mapping(label_names)
    labels = torch.tensor([mapping[name] for name in label_names], dtype=torch.long)

    set_seed(args.seed)
    model_dir = args.model or default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(mapping),
        id2label={i: name for name, i in mapping.items()},
        label2id=mapping,
    )
    enc = tokenizer(
        texts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    dataset = TensorDataset(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"], labels)
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    model.train()

    setup_seconds = time.perf_counter() - _T_START
    losses: list[float] = []
    t0 = time.perf_counter()
    for input_ids, token_type_ids, attention_mask, batch_labels in loader:
        out = model(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            labels=batch_labels,
        )
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
    loop_seconds = time.perf_counter() - t0

    n = len(texts)
    result: dict[str, object] = {
        "name": NAME,
        "n_examples": n,
        "batch_size": args.batch_size,
        "loop_seconds": loop_seconds,
        "loop_examples_per_s": n / loop_seconds,
        "setup_seconds": setup_seconds,
        "steps": len(losses),
        "train_loss_mean": sum(losses) / len(losses) if losses else None,
        "max_length": MAX_LENGTH,
        "padding": "max_length",
        "precision": "fp32",
        "optimizer": "torch.optim.AdamW(lr=5e-5) defaults: fused=None, foreach=None "
        "(single-tensor on CPU)",
        "seed": args.seed,
        "train_csv": str(args.train),
        "model": model_dir,
        **env_info(),
    }
    print(
        f"{NAME}: {n} examples, loop {loop_seconds:.2f} s, "
        f"{n / loop_seconds:.2f} ex/s (setup {setup_seconds:.2f} s)"
    )
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
