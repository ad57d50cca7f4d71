"""Run a classifier over encoded texts in length-sorted batches (no FastAPI, no I/O)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from tuneforge.data.encode import EncodedTexts, collate, sorted_batches

if TYPE_CHECKING:  # torch loads lazily: softmax/sigmoid serve ONNX backends without it
    import torch
    from torch import nn


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op when dtype is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype)


def run_logits(
    model: nn.Module,
    encoded: EncodedTexts,
    *,
    pad_id: int,
    batch_size: int = 64,
    device: torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Logits for every text, in input order.

    Texts are batched longest-first so each batch pads only to its own longest text.

    Returns:
        float32 array of shape (n_texts, n_labels).
    """
    import torch

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    try:
        with torch.inference_mode():
            for idx in sorted_batches(encoded.lengths, batch_size):
                batch = {
                    k: v.to(device)
                    for k, v in collate([encoded.ids[i] for i in idx], pad_id).items()
                }
                with autocast_context(device, autocast_dtype):
                    logits = model(**batch).logits
                logits = logits.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(encoded), logits.shape[1]), dtype=np.float32)
                out[idx] = logits
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError("no texts to run")
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stable probabilities."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64."""
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
