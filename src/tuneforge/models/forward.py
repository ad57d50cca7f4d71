"""A classifier's forward pass, shared by training, evaluation and inference: the precision
context it runs in and the probabilities its logits mean."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads lazily: the ONNX backends use softmax/sigmoid without it
    import torch


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or a no-op when dtype is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stable probabilities."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64."""
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def probabilities(logits: np.ndarray, *, multi_label: bool) -> np.ndarray:
    """Sigmoid per label for multi-label models, softmax over labels otherwise."""
    return sigmoid(logits) if multi_label else softmax(logits)
