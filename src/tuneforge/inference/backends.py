"""Inference backends behind one interface: encoded texts in, logits out.

- ``torch``: the bundle's PyTorch model (fp32, or bf16 autocast where the CPU has fast bf16).
- ``onnx``: ONNX Runtime, fp32 (same answers as torch to ~1e-5).
- ``onnx-int8``: ONNX Runtime with int8 MatMuls whose activation scales were calibrated at
  export (static quantization), so a text's answer does not depend on what it is batched with.

Every backend pads a batch only to its own longest text and masks the padding, so results
are the same alone and in any batch (up to float rounding).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tuneforge.data.encode import EncodedTexts, sorted_batches
from tuneforge.inference.runner import run_logits

if TYPE_CHECKING:  # torch loads lazily: an ONNX backend runs without it
    import torch

ONNX_DIR = "onnx"
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
BACKENDS = ("torch", "onnx", "onnx-int8")


class Backend(Protocol):
    """Computes logits for encoded texts."""

    name: str

    def logits(self, encoded: EncodedTexts, batch_size: int = 64) -> np.ndarray:
        """(n_texts, n_labels) float32 logits in input order."""
        ...


class TorchBackend:
    """A PyTorch sequence-classification model."""

    def __init__(
        self,
        model: torch.nn.Module,
        pad_id: int,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.pad_id = pad_id
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.name = "torch" if autocast_dtype is None else "torch-bf16"

    def logits(self, encoded: EncodedTexts, batch_size: int = 64) -> np.ndarray:
        return run_logits(
            self.model,
            encoded,
            pad_id=self.pad_id,
            batch_size=batch_size,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
        )


def pad_batch(rows: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 arrays padded to the longest row."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


class OnnxBackend:
    """An ONNX Runtime session over an exported model (``input_ids``, ``attention_mask``).

    Args:
        path: The ``.onnx`` file.
        pad_id: The tokenizer's padding id.
        name: ``onnx`` or ``onnx-int8``.
        threads: Intra-op threads (None: ONNX Runtime's default, one per core).
        spin: Let idle intra-op threads spin between operators: the lowest latency for a
            process that owns its cores (batch-1 p50 3.6 -> 2.8 ms for int8 measured here).
            A server passes False: its threads share the cores with the HTTP event loop,
            and spinning threads starve it (measured: -30% requests/s).
    """

    def __init__(
        self,
        path: Path,
        pad_id: int,
        name: str,
        threads: int | None = None,
        spin: bool = True,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.pad_id = pad_id
        self.name = name
        self.path = path

    def logits(self, encoded: EncodedTexts, batch_size: int = 64) -> np.ndarray:
        out: np.ndarray | None = None
        for idx in sorted_batches(encoded.lengths, batch_size):
            ids, mask = pad_batch([encoded.ids[i] for i in idx], self.pad_id)
            logits = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if out is None:
                out = np.empty((len(encoded), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
        if out is None:
            raise ValueError("no texts to run")
        return out


def onnx_path(bundle: Path, name: str) -> Path:
    """Where an exported backend's model file lives in a bundle."""
    return bundle / ONNX_DIR / ONNX_FILES[name]
