"""Build a sequence classifier (base encoder + task head) from a base model directory."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from tuneforge.errors import InputError


def load_tokenizer(model_dir: Path, *, trust_remote_code: bool = False):
    """The base model's tokenizer; a broken checkpoint is an InputError, not a crash."""
    try:
        return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"could not load the tokenizer of {model_dir}: {exc}; pass a checkpoint directory "
            "saved with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
        ) from exc


def build_classifier(
    model_dir: Path,
    labels: list[str],
    *,
    multi_label: bool = False,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load a pretrained encoder and put a freshly initialised classification head on it.

    Args:
        model_dir: Local Hugging Face checkpoint directory.
        labels: Label names in id order.
        multi_label: Sigmoid/BCE head instead of softmax/cross-entropy.
        trust_remote_code: Allow custom model code from the checkpoint (off by default).

    Returns:
        The model in training mode, float32.
    """
    problem = "multi_label_classification" if multi_label else "single_label_classification"
    try:
        config = AutoConfig.from_pretrained(
            model_dir,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            problem_type=problem,
            trust_remote_code=trust_remote_code,
        )
        # The head is new by design; silence the "newly initialized weights" report.
        level = logging.getLogger("transformers").level
        logging.getLogger("transformers").setLevel(logging.ERROR)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir, config=config, dtype=torch.float32, trust_remote_code=trust_remote_code
            )
        finally:
            logging.getLogger("transformers").setLevel(level)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"could not load a classifier from {model_dir}: {exc}; pass a BERT-family "
            "checkpoint directory (config.json, tokenizer and safetensors weights)"
        ) from exc
    model.train()
    return model
