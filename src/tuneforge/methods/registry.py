"""The fine-tuning method registry: one small module per method registers itself here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from tuneforge.config import MethodConfig
from tuneforge.errors import InputError


@dataclass(frozen=True)
class Method:
    """A way to fine-tune a classifier.

    Attributes:
        name: The name users pass as ``--method``.
        description: One line for ``--help`` and the model card.
        prepare: Takes the full classifier and the method config, returns the module to
            train with exactly the parameters that should learn set ``requires_grad``.
        adapter: The bundle stores a peft adapter plus the base model's identity, not a
            whole model.
        learning_rate: The ``auto`` learning rate at batch size 32.
        head_lr_multiplier: The ``auto`` ratio of the new head's learning rate to the
            rest (a freshly initialised head learns slowly at an encoder's rate).
        uses_target_modules: ``prepare`` adapts the modules named by the method config's
            ``target_modules`` (checked against the base model before training).
    """

    name: str
    description: str
    prepare: Callable[[nn.Module, MethodConfig], nn.Module]
    adapter: bool
    learning_rate: float
    head_lr_multiplier: float = 1.0
    uses_target_modules: bool = False


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Register a method by name; names are unique, lower-case identifiers."""
    if not method.name.isidentifier() or method.name != method.name.lower():
        raise ValueError(f"method names are lower-case identifiers, got {method.name!r}")
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    if method.learning_rate <= 0:
        raise ValueError("a method's auto learning rate must be positive")
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """Look a method up by name.

    Raises:
        InputError: Unknown name; the message lists the known ones.
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise InputError(
            f"unknown method {name!r}; choose one of: {', '.join(sorted(_METHODS))}"
        ) from None


def method_names() -> list[str]:
    """All registered method names, sorted."""
    return sorted(_METHODS)


def count_trainable(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return trainable, total
