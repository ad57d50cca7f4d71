"""Run a classifier over encoded texts in length-sorted batches (no FastAPI, no I/O)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tuneforge.data.encode import EncodedTexts, collate, sorted_batches
from tuneforge.models.forward import autocast_context


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
