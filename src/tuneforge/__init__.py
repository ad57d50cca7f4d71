"""tuneforge: fine-tune, evaluate and host language models on your own machines.

The public API is imported lazily, so ``import tuneforge`` does no work and no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Predictor": "tuneforge.inference.predictor",
    "Prediction": "tuneforge.inference.predictor",
    "Generator": "tuneforge.inference.generator",
    "Completion": "tuneforge.inference.generator",
    "finetune_classifier": "tuneforge.recipes.finetune_classifier",
    "evaluate_bundle": "tuneforge.recipes.evaluate",
    "RunConfig": "tuneforge.config",
    "DataConfig": "tuneforge.config",
    "ModelConfig": "tuneforge.config",
    "MethodConfig": "tuneforge.config",
    "TrainConfig": "tuneforge.config",
    "InputError": "tuneforge.errors",
    "TuneforgeError": "tuneforge.errors",
}

__all__ = [
    "Completion",
    "DataConfig",
    "Generator",
    "InputError",
    "MethodConfig",
    "ModelConfig",
    "Prediction",
    "Predictor",
    "RunConfig",
    "TrainConfig",
    "TuneforgeError",
    "evaluate_bundle",
    "finetune_classifier",
]

if TYPE_CHECKING:  # pragma: no cover
    from tuneforge.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
    from tuneforge.errors import InputError, TuneforgeError
    from tuneforge.inference.generator import Completion, Generator
    from tuneforge.inference.predictor import Prediction, Predictor
    from tuneforge.recipes.evaluate import evaluate_bundle
    from tuneforge.recipes.finetune_classifier import finetune_classifier


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tuneforge' has no attribute {name!r}")
