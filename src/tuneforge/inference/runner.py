"""Run a classifier over encoded texts in length-sorted batches (no FastAPI, no I/O)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from tuneforge.data.encode import EncodedTexts, collate, sorted_batches


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op when dtype is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
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
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    try:
        for idx in sorted_batches(encoded.lengths, batch_size):
            batch = {
                k: v.to(device) for k, v in collate([encoded.ids[i] for i in idx], pad_id).items()
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
