"""The export workflow (``tuneforge export``): a bundle to ONNX (fp32, and int8 with
calibrated activation scales), recording what each backend costs in accuracy and gains in
speed on the bundle's validation split.

The fp32 graph gets ONNX Runtime's transformer fusions where every layer fuses; int8 uses
weights per channel and activation scales fixed from calibration texts (``onnx_graph``).
Dynamic quantization (scales computed per batch) makes a text's label depend on the other
texts in its batch; fixed scales make every row's integer arithmetic independent of the batch.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tuneforge.bundle import (
    BundleInfo,
    atomic_write_json,
    publish,
    read_bundle,
    require_classifier,
)
from tuneforge.data.encode import EncodedTexts, encode_texts
from tuneforge.data.labels import LabelMap
from tuneforge.data.splits import row_hash
from tuneforge.data.tables import read_table
from tuneforge.errors import InputError
from tuneforge.evaluation.evaluate import evaluate_logits
from tuneforge.inference.backends import (
    ONNX_DIR,
    Backend,
    OnnxBackend,
    TorchBackend,
)
from tuneforge.inference.export_report import EXPORT_REPORT
from tuneforge.inference.loading import check_safe_bundle, load_bundle_model
from tuneforge.inference.onnx_graph import fuse_transformer, quantize_int8
from tuneforge.models.forward import probabilities

if TYPE_CHECKING:
    from transformers import PreTrainedModel

CALIBRATION_TEXTS = 256
OPSET = 17


@dataclass
class ValidationData:
    """Texts and labels the export is measured on, and where they came from."""

    texts: list[str]
    labels: list[tuple[str, ...]]
    source: str


def bundle_validation(info: BundleInfo, override: str | None = None) -> ValidationData:
    """The bundle's validation split, re-read from its source file by row hash.

    Args:
        info: The bundle.
        override: A labelled file to use instead (when the source file is gone).

    Raises:
        InputError: The source is missing or changed and no override was given.
    """
    run = json.loads((info.path / "run_config.json").read_text(encoding="utf-8"))["data"]
    read = {
        "text_column": run.get("text_column"),
        "label_column": run.get("label_column"),
        "multi_label": info.multi_label,
        "label_separator": run.get("label_separator", "|"),
    }
    if override is not None:
        table = read_table(override, **read)
        return ValidationData(list(table.texts), list(table.labels), override)
    splits = json.loads((info.path / "splits.json").read_text(encoding="utf-8"))["validation"]
    source = splits["source"]
    hint = "pass --validation FILE (a labelled file) to measure the export on it"
    if not Path(source).is_file():
        raise InputError(f"the bundle's validation data {source} is not there; {hint}")
    table = read_table(source, **read)
    wanted = set(splits["row_hashes"])
    keep = [
        i
        for i, (t, lab) in enumerate(zip(table.texts, table.labels, strict=True))
        if row_hash(t, lab) in wanted
    ]
    if len(keep) < max(1, int(0.9 * len(wanted))):
        raise InputError(f"{source} changed since training (validation rows not found); {hint}")
    return ValidationData([table.texts[i] for i in keep], [table.labels[i] for i in keep], source)


def _export_fp32(model: PreTrainedModel, path: Path, vocab_size: int) -> bool:
    """Export ``model`` to ``path`` (fused where ONNX Runtime can); returns whether fused."""

    class Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    # Eager attention exports the matmul/softmax pattern ONNX Runtime's fusion recognises
    # (SDPA exports one that it does not); the numbers are the same.
    attention = getattr(model.config, "_attn_implementation", None)
    if attention and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    wrapper = Logits(model).eval()
    ids = torch.randint(5, max(6, vocab_size - 1), (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    axes = {0: "batch", 1: "sequence"}
    raw = path.with_name("raw." + path.name)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python-level shape checks inside transformers' attention;
        # the export is checked against torch on real texts of other shapes right after.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (ids, mask),
            str(raw),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    if attention and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(attention)  # the torch backend measured next
    config = model.config
    try:
        return fuse_transformer(
            raw,
            path,
            num_heads=int(getattr(config, "num_attention_heads", 0)),
            hidden_size=int(getattr(config, "hidden_size", 0)),
            num_layers=int(getattr(config, "num_hidden_layers", -1)),
        )
    finally:
        raw.unlink(missing_ok=True)


def _time_backend(backend: Backend, encoded: EncodedTexts, n_single: int = 64) -> dict[str, float]:
    """Batch-1 median latency (ms) and batch-32 throughput (texts/s) on the validation texts."""
    backend.logits(EncodedTexts(encoded.ids[:4], encoded.lengths[:4], 0), 32)  # warm-up
    singles = []
    for i in range(min(n_single, len(encoded))):
        one = EncodedTexts([encoded.ids[i]], encoded.lengths[i : i + 1], 0)
        t = time.perf_counter()
        backend.logits(one, 1)
        singles.append(time.perf_counter() - t)
    t = time.perf_counter()
    backend.logits(encoded, 32)
    elapsed = time.perf_counter() - t
    return {
        "batch1_ms_p50": round(statistics.median(singles) * 1000, 3),
        "batch32_per_s": round(len(encoded) / elapsed, 1),
    }


def export_bundle(
    bundle: str | Path,
    *,
    int8: bool = True,
    validation_file: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Write ``onnx/model.onnx`` (and ``onnx/model.int8.onnx``) into a bundle, measured.

    The report (``onnx/export.json``) gives, per backend, validation accuracy, the drop
    against torch fp32, agreement of labels, the largest probability difference, batch-1
    latency and batch-32 throughput. Files appear atomically: a failed export leaves the
    bundle as it was.

    Raises:
        InputError: Not a bundle, or no validation data to measure on.
    """
    from transformers import AutoTokenizer

    info = require_classifier(read_bundle(bundle), "export")
    check_safe_bundle(info)  # before transformers opens anything in it
    data = bundle_validation(info, validation_file)
    tokenizer = AutoTokenizer.from_pretrained(info.path / "tokenizer", trust_remote_code=False)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = encode_texts(tokenizer, data.texts, info.max_length)
    labels = LabelMap(tuple(info.labels))
    try:
        targets = (
            labels.encode_multi(data.labels)
            if info.multi_label
            else labels.encode_single(data.labels)
        )
    except InputError as exc:
        raise InputError(f"validation data {data.source}: {exc}") from None
    thresholds = info.thresholds
    model = load_bundle_model(info)
    reference = TorchBackend(model, pad_id, torch.device("cpu"))

    stage = Path(tempfile.mkdtemp(prefix=".onnx.", dir=info.path))
    try:
        log("exporting fp32 ONNX")
        fused = _export_fp32(model, stage / "model.onnx", getattr(tokenizer, "vocab_size", 100))
        names = ["onnx"]
        if int8:
            log(f"calibrating int8 on {min(len(encoded), CALIBRATION_TEXTS)} validation texts")
            rng = np.random.default_rng(0)
            pick = rng.permutation(len(encoded))[:CALIBRATION_TEXTS]
            quantize_int8(
                stage / "model.onnx", stage / "model.int8.onnx", [encoded.ids[i] for i in pick]
            )
            names.append("onnx-int8")
        backends: dict[str, Backend] = {"torch": reference}
        for name in names:
            file = stage / ("model.onnx" if name == "onnx" else "model.int8.onnx")
            backends[name] = OnnxBackend(file, pad_id, name)
        report: dict[str, Any] = {}
        ref_logits = None
        for name, backend in backends.items():
            log(f"measuring {name}")
            logits = backend.logits(encoded, 32)
            metrics = evaluate_logits(
                logits,
                targets,
                labels.names,
                multi_label=info.multi_label,
                thresholds=np.asarray(thresholds) if thresholds is not None else 0.5,
            )
            accuracy = metrics["accuracy"] if "accuracy" in metrics else metrics["subset_accuracy"]
            entry: dict[str, Any] = {"accuracy": accuracy, "macro_f1": metrics["macro_f1"]}
            if ref_logits is None:
                ref_logits, ref_accuracy = logits, accuracy
            else:
                entry["accuracy_drop"] = round(ref_accuracy - accuracy, 6)
                entry["label_agreement"] = float(
                    np.mean(logits.argmax(axis=1) == ref_logits.argmax(axis=1))
                )
                entry["max_probability_diff"] = float(
                    np.abs(
                        probabilities(logits, multi_label=info.multi_label)
                        - probabilities(ref_logits, multi_label=info.multi_label)
                    ).max()
                )
            entry.update(_time_backend(backend, encoded))
            report[name] = entry
        del backends
        result = {
            "reference": "torch",
            "validation": {"source": data.source, "rows": len(data.texts)},
            "onnxruntime": _ort_version(),
            "fused_attention": fused,
            "created_at": int(time.time()),
            "backends": report,
        }
        atomic_write_json(stage / EXPORT_REPORT, result)
        publish(stage, info.path / ONNX_DIR)
        return result
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
