"""Baseline: Hugging Face ``Trainer`` fine-tuning tuneforge's default model on CPU.

What it does:
- the N examples (``common.load_sample``: first N rows of a seeded shuffle of the CSV) are
  pre-tokenised once without padding (truncation to 256 tokens); ``DataCollatorWithPadding``
  pads each batch dynamically;
- ``TrainingArguments(per_device_train_batch_size=32, num_train_epochs=1, use_cpu=True,
  train_sampling_strategy="group_by_length", report_to=[], save_strategy="no",
  logging_strategy="no", disable_tqdm=True)``, everything else at the transformers default
  (lr 5e-5, linear decay, no warmup, no weight decay, ``optim="adamw_torch_fused"`` with
  torch >= 2.8 — the resolved optimizer is recorded in the JSON);
- ``--bf16`` sets ``bf16=True`` (CPU autocast to bfloat16). Only fast on CPUs with
  ``avx512_bf16``/``amx_bf16``; the JSON records ``cpu_bf16_native``;
- ``--no-group-by-length`` uses the Trainer's pure default sampler (``"random"``).

What it measures: ``loop_seconds`` is ``time.perf_counter`` around ``trainer.train()``;
``trainer_train_runtime`` is the Trainer's own ``train_runtime`` metric. Model loading and
tokenisation are excluded (``setup_seconds``). ``loop_examples_per_s = n / loop_seconds``.

Run (tiny size, a few seconds):
    python bench/baselines/hf_trainer.py --train SST2_TRAIN_CSV \
        --n-examples 64 --seed 0 --json /tmp/trainer.json [--bf16] [--no-group-by-length]
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from common import default_model_path, env_info, label_mapping, load_sample, write_json  # noqa: E402

MAX_LENGTH = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train", required=True, type=Path, help="text,label CSV")
    p.add_argument("--n-examples", type=int, required=True, help="rows of the seeded shuffle")
    p.add_argument("--batch-size", type=int, default=32, help="per_device_train_batch_size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="TrainingArguments(bf16=True)")
    p.add_argument(
        "--no-group-by-length",
        action="store_true",
        help='Trainer defaults: train_sampling_strategy="random"',
    )
    p.add_argument("--model", default=None, help="model dir (default: tuneforge's default)")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    return p.parse_args(argv)


def describe_optimizer(trainer: Trainer) -> dict[str, Any]:
    """Class and fused/foreach flags of the optimizer the Trainer actually built."""
    opt = trainer.optimizer
    inner = getattr(opt, "optimizer", opt)  # accelerate wraps it in AcceleratedOptimizer
    defaults = getattr(inner, "defaults", {})
    return {
        "optimizer_class": f"{type(inner).__module__}.{type(inner).__name__}",
        "optimizer_fused": defaults.get("fused"),
        "optimizer_foreach": defaults.get("foreach"),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    texts, label_names = load_sample(args.train, args.n_examples, args.seed)
    mapping = label_mapping(label_names)

    set_seed(args.seed)
    model_dir = args.model or default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(mapping),
        id2label={i: name for name, i in mapping.items()},
        label2id=mapping,
    )
    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
    # A list of dicts is a map-style dataset; LengthGroupedSampler reads len(input_ids).
    train_dataset = [
        {**{key: enc[key][i] for key in enc}, "labels": mapping[label_names[i]]}
        for i in range(len(texts))
    ]
    sampling = "random" if args.no_group_by_length else "group_by_length"
    name = "trainer_bf16" if args.bf16 else "trainer_fp32"
    if args.no_group_by_length:
        name += "_defaults"

    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as out_dir:
        training_args = TrainingArguments(
            output_dir=out_dir,
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=1,
            use_cpu=True,
            bf16=args.bf16,
            train_sampling_strategy=sampling,
            seed=args.seed,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_dataset,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
        )
        setup_seconds = time.perf_counter() - _T_START
        t0 = time.perf_counter()
        output = trainer.train()
        loop_seconds = time.perf_counter() - t0

    n = len(texts)
    metrics = output.metrics
    result: dict[str, Any] = {
        "name": name,
        "n_examples": n,
        "batch_size": args.batch_size,
        "loop_seconds": loop_seconds,
        "loop_examples_per_s": n / loop_seconds,
        "trainer_train_runtime": metrics.get("train_runtime"),
        "trainer_train_samples_per_second": metrics.get("train_samples_per_second"),
        "setup_seconds": setup_seconds,
        "steps": output.global_step,
        "train_loss_mean": metrics.get("train_loss"),
        "precision": "bf16 (autocast)" if args.bf16 else "fp32",
        "train_sampling_strategy": sampling,
        "optim": str(getattr(training_args.optim, "value", training_args.optim)),
        **describe_optimizer(trainer),
        "learning_rate": training_args.learning_rate,
        "lr_scheduler_type": str(
            getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
        ),
        "max_length": MAX_LENGTH,
        "padding": "dynamic (DataCollatorWithPadding)",
        "seed": args.seed,
        "train_csv": str(args.train),
        "model": model_dir,
        **env_info(),
    }
    print(
        f"{name}: {n} examples, loop {loop_seconds:.2f} s ({n / loop_seconds:.2f} ex/s), "
        f"train_runtime {result['trainer_train_runtime']} s, optim {result['optim']} "
        f"(setup {setup_seconds:.2f} s)"
    )
    if args.bf16 and not result["cpu_bf16_native"]:
        print(
            "warning: this CPU has no avx512_bf16/amx_bf16; bf16 matmuls are emulated and slow",
            file=sys.stderr,
        )
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
