"""``full``: every weight learns (optionally keeping the word-embedding matrix fixed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from torch import nn

from tuneforge.config import MethodConfig
from tuneforge.methods.registry import Method, register_method

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def prepare_full(model: nn.Module, config: MethodConfig) -> nn.Module:
    """Unfreeze everything; freeze the input word embeddings if the config says so.

    Freezing the word-embedding table (half of a small encoder's parameters, and no
    FLOPs) halves the optimizer step and the gradient memory traffic; the head and all
    transformer layers still learn.
    """
    for param in model.parameters():
        param.requires_grad_(True)
    if config.freeze_embeddings:
        classifier = cast("PreTrainedModel", model)  # prepare takes the built classifier
        classifier.get_input_embeddings().weight.requires_grad_(False)
    return model


register_method(
    Method(
        name="full",
        description="full fine-tuning of encoder and head",
        prepare=prepare_full,
        adapter=False,
        learning_rate=5e-5,
        head_lr_multiplier=20.0,
    )
)
