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
from tuneforge.models.safety import check_safe_model_dir


def load_tokenizer(model_dir: Path):
    """The base model's tokenizer; a broken checkpoint is an InputError, not a crash."""
    check_safe_model_dir(model_dir, "model", needs_weights=False)
    try:
        return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
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
) -> PreTrainedModel:
    """Load a pretrained encoder and put a freshly initialised classification head on it.

    Args:
        model_dir: Local Hugging Face checkpoint directory.
        labels: Label names in id order.
        multi_label: Sigmoid/BCE head instead of softmax/cross-entropy.

    Returns:
        The model in training mode, float32.

    Raises:
        InputError: The checkpoint cannot be loaded, or would run code on load (weights
            only as pickle, custom model code); nothing is read from it in that case.
    """
    check_safe_model_dir(model_dir)
    problem = "multi_label_classification" if multi_label else "single_label_classification"
    try:
        config = AutoConfig.from_pretrained(
            model_dir,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            problem_type=problem,
            trust_remote_code=False,
        )
        # The head is new by design; silence the "newly initialized weights" report.
        level = logging.getLogger("transformers").level
        logging.getLogger("transformers").setLevel(logging.ERROR)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir,
                config=config,
                dtype=torch.float32,
                use_safetensors=True,
                trust_remote_code=False,
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
