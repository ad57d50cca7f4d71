"""Load a bundle and classify texts: labels and scores, not tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from tuneforge.bundle import BundleInfo, read_bundle, require_classifier
from tuneforge.data.encode import encode_texts
from tuneforge.errors import InputError
from tuneforge.inference.backends import Backend
from tuneforge.inference.loading import check_safe_bundle, load_bundle_model
from tuneforge.models.forward import sigmoid, softmax

if TYPE_CHECKING:  # torch and transformers load only for the torch backend
    import torch


@dataclass
class Prediction:
    """The answer for one text.

    Attributes:
        label: The predicted label (single-label), or None when the top score is below the
            abstain threshold.
        score: Probability of the top label.
        probabilities: Label -> probability, for every label.
        labels: Multi-label: every label at or above its threshold (single-label: the
            label, if any).
        top_k: The k most probable (label, probability) pairs, most probable first.
    """

    label: str | None
    score: float
    probabilities: dict[str, float]
    labels: list[str] = field(default_factory=list)
    top_k: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "label": self.label,
            "score": self.score,
            "labels": self.labels,
            "top_k": [{"label": lab, "score": s} for lab, s in self.top_k],
            "probabilities": self.probabilities,
        }


class Predictor:
    """Classifies texts with a trained bundle.

    Use ``Predictor.load(path)``; then ``predict("one text")`` or ``predict([...])``.
    """

    def __init__(self, info: BundleInfo, backend: Backend, tokenizer) -> None:
        self.info = info
        self.backend = backend
        self.tokenizer = tokenizer
        self.labels = info.labels
        self.multi_label = info.multi_label
        thresholds = info.thresholds
        self.thresholds = np.asarray(thresholds if thresholds is not None else 0.5)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def backend_name(self) -> str:
        """Which backend computes the answers (``torch``, ``onnx``, ``onnx-int8``...)."""
        return self.backend.name

    @property
    def model(self) -> torch.nn.Module | None:
        """The PyTorch model (torch backend only)."""
        return getattr(self.backend, "model", None)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str | None = None,
        precision: str = "fp32",
        backend: str = "torch",
        max_accuracy_drop: float = 0.01,
        threads: int | None = None,
        spin: bool = True,
    ) -> Predictor:
        """Load a bundle directory.

        Args:
            path: The bundle (the ``--output`` of ``tuneforge train``).
            device: ``cpu``, ``cuda`` or None (CUDA when available); torch backend only.
            precision: ``fp32`` (default, exact), ``bf16`` or ``auto``; torch backend only.
            backend: ``torch``, ``onnx``, ``onnx-int8`` (after ``tuneforge export``), or
                ``auto``: the fastest exported backend whose accuracy drop recorded at export
                is at most ``max_accuracy_drop`` (torch when none is).
            max_accuracy_drop: The bound for ``auto`` (0.01 = one accuracy point).
            threads: CPU threads to compute with (None: tuneforge's default choice, one per
                CPU this process may use that other processes leave free; see
                ``tuneforge.training.threads.choose_threads``). ONNX backends: the session's
                intra-op threads. torch backend: ``torch.set_num_threads``, which is
                process-wide, so the last model loaded sets it for every torch model in
                the process.
            spin: Let ONNX Runtime's idle threads spin (lowest latency when the process
                owns its cores); False for a process that shares them, such as a server.

        Raises:
            InputError: Not a bundle, an adapter whose base model is missing or differs, or
                a backend that was not exported.
        """
        from tuneforge.inference.backends import BACKENDS, OnnxBackend, TorchBackend, onnx_path
        from tuneforge.inference.export_report import choose_backend
        from tuneforge.inference.tokenizer import load_inference_tokenizer
        from tuneforge.training.threads import choose_threads

        info = require_classifier(read_bundle(path), "prediction")
        check_safe_bundle(info)
        if backend == "auto":
            backend = choose_backend(info.path, max_accuracy_drop)
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
        if threads is not None and threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        tokenizer = load_inference_tokenizer(info.path / "tokenizer")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # ONNX Runtime's threads spin when ``spin``; torch's follow the OpenMP wait policy.
        spinning = None if backend == "torch" else spin
        n_threads = choose_threads(threads, window=0.1, spinning=spinning).threads
        if backend == "torch":
            import torch

            from tuneforge.training.device import resolve_precision

            torch.set_num_threads(n_threads)
            dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            runner: Backend = TorchBackend(
                load_bundle_model(info), pad_id, dev, resolve_precision(precision, dev)
            )
        else:
            file = onnx_path(info.path, backend)
            if not file.is_file():
                raise InputError(
                    f"bundle {info.path} has no {backend} export; run `tuneforge export "
                    f"{info.path} --format onnx{' --int8' if backend == 'onnx-int8' else ''}`"
                )
            runner = OnnxBackend(file, pad_id, backend, threads=n_threads, spin=spin)
        return cls(info, runner, tokenizer)

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, k) raw logits."""
        encoded = encode_texts(self.tokenizer, list(texts), self.info.max_length)
        return self.backend.logits(encoded, batch_size)

    def probabilities(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, k) probabilities: softmax for single-label, sigmoid for multi-label."""
        logits = self.logits(texts, batch_size)
        return sigmoid(logits) if self.multi_label else softmax(logits)

    @overload
    def predict(  # type: ignore[overload-overlap]  # a str is a Sequence[str] too; it matches first
        self,
        texts: str,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        batch_size: int = 64,
    ) -> Prediction: ...
    @overload
    def predict(
        self,
        texts: Sequence[str],
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        batch_size: int = 64,
    ) -> list[Prediction]: ...

    def predict(
        self,
        texts: str | Sequence[str],
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        batch_size: int = 64,
    ) -> Prediction | list[Prediction]:
        """Classify one text or a list of texts.

        Args:
            texts: A string (returns one Prediction) or a list (returns a list).
            top_k: Also return the k most probable labels.
            threshold: Abstain (label None) when the top probability is below this, so
                uncertain texts can go to a human.
            batch_size: Texts per forward pass.
        """
        single = isinstance(texts, str)
        batch: list[str] = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            return []
        if any(not isinstance(t, str) for t in batch):
            raise InputError("predict() takes a string or a list of strings")
        probs = self.probabilities(batch, batch_size=batch_size)
        out = self.decide(probs, top_k=top_k, threshold=threshold)
        return out[0] if single else out

    def decide(
        self, probs: np.ndarray, *, top_k: int | None = None, threshold: float | None = None
    ) -> list[Prediction]:
        """Predictions from probability rows (what ``predict`` does after the model ran)."""
        k = min(top_k or 0, len(self.labels))
        out = []
        for row in probs:
            order = np.argsort(-row, kind="stable")
            best = int(order[0])
            score = float(row[best])
            if self.multi_label:
                chosen = [self.labels[i] for i in np.flatnonzero(row >= self.thresholds)]
                label = self.labels[best] if self.labels[best] in chosen else None
            else:
                label = self.labels[best]
                chosen = [label]
            if threshold is not None and score < threshold:
                label, chosen = None, []
            out.append(
                Prediction(
                    label=label,
                    score=score,
                    probabilities={lab: float(p) for lab, p in zip(self.labels, row, strict=True)},
                    labels=chosen,
                    top_k=[(self.labels[i], float(row[i])) for i in order[:k]],
                )
            )
        return out
