"""Run a classifier over encoded texts in length-sorted batches (no FastAPI, no I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tuneforge.data.encode import EncodedTexts, collate, sorted_batches
from tuneforge.models.forward import autocast_context

if TYPE_CHECKING:  # torch loads lazily: the ONNX backends run without it
    import torch
    from torch import nn


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
