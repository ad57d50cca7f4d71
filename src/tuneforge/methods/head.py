"""``head``: the encoder stays frozen; only the classification head (and pooler) learn."""

from __future__ import annotations

from torch import nn

from tuneforge.config import MethodConfig
from tuneforge.methods.registry import Method, register_method


def head_parameter_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Names of the head modules of a Hugging Face sequence classifier."""
    prefixes = ("classifier", "score", "pre_classifier")
    pooler = [n for n, _ in model.named_modules() if n.endswith("pooler")]
    return prefixes + tuple(pooler)


def prepare_head(model: nn.Module, config: MethodConfig) -> nn.Module:
    """Freeze every parameter except the head's."""
    del config  # no options
    prefixes = head_parameter_prefixes(model)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefixes))
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("found no classification head to train in this model")
    return model


register_method(
    Method(
        name="head",
        description="frozen encoder, train the classification head only",
        prepare=prepare_head,
        adapter=False,
        learning_rate=2e-3,
    )
)
