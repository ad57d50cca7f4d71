"""Adapter bundles that share one copy of their base model in memory — and one module tree.

Every base weight an adapter model uses is the *same tensor* as in the shared base: only the
adapter's own layers and its trained head take new memory. Adapters of the same shape (same
base, same peft configuration, same number of labels) also share one module tree: an
adapter is kept as a plain dict of its own tensors and run through the shared tree with
``torch.func.functional_call`` (under a lock per tree). A module tree costs ~0.55 MB of
Python objects for a 6-layer encoder with LoRA — more than half of what an adapter's own
tensors take — so one tree per adapter was most of the memory of many hosted adapters.
Models are built on PyTorch's ``meta`` device (shapes, no storage) with the shared tensors
put in, so loading an adapter never reads, allocates and frees a whole encoder. The adapter
is not merged (merging would write into the shared weights).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import torch

from tuneforge.bundle import BundleInfo
from tuneforge.errors import InputError
from tuneforge.inference.loading import check_base_model, unwrap_modules_to_save
from tuneforge.models.classifier import build_classifier
from tuneforge.models.safety import check_safe_model_dir


def tensor_bytes(tensors) -> int:
    """Bytes of distinct tensor storages."""
    seen: dict[int, int] = {}
    for t in tensors:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


class AdapterView(torch.nn.Module):
    """One adapter: its own tensors, run through a module tree shared with adapters of the
    same shape.

    Args:
        template: The shared module tree (a peft model over the shared base weights).
        tensors: This adapter's own tensors by the template's parameter/buffer names.
        lock: The template's lock: ``functional_call`` swaps tensors into the shared tree
            for the length of one forward pass.
    """

    def __init__(
        self, template: torch.nn.Module, tensors: dict[str, torch.Tensor], lock: threading.Lock
    ) -> None:
        super().__init__()
        self.template = template
        self.own_tensors = tensors  # a plain dict: not registered, not in state_dict()
        self._lock = lock

    def forward(self, **inputs: torch.Tensor) -> Any:
        """The template's forward with this adapter's tensors in place."""
        with self._lock:
            return torch.func.functional_call(
                self.template, self.own_tensors, args=(), kwargs=inputs, strict=False
            )


class SharedBases:
    """Base-model weights loaded once per base (keyed by the weights' sha256), and one
    module tree per adapter shape."""

    def __init__(self) -> None:
        self._bases: dict[str, dict[str, torch.nn.Parameter]] = {}
        self._buffers: dict[str, dict[str, torch.Tensor]] = {}
        # (base key, shape key) -> (template, its lock, its own tensors' names and shapes)
        self._templates: dict[tuple[str, str], tuple[torch.nn.Module, threading.Lock, dict]] = {}
        self._lock = threading.Lock()

    def base_bytes(self, key: str) -> int:
        """Memory of one shared base."""
        return tensor_bytes(self._bases.get(key, {}).values())

    def drop(self, key: str) -> None:
        """Forget a base no adapter uses any more."""
        with self._lock:
            self._bases.pop(key, None)
            self._buffers.pop(key, None)
            for template_key in [k for k in self._templates if k[0] == key]:
                del self._templates[template_key]

    def _base(self, info: BundleInfo) -> tuple[str, Path, dict[str, torch.nn.Parameter]]:
        key = info.manifest.base_model.sha256
        with self._lock:
            if key in self._bases:
                # the same hash was checked against the installed weights when first loaded
                base = check_base_model(info, actual_sha256=key)
                return key, base.path, self._bases[key]
            base = check_base_model(info)
            model = build_classifier(base.path, ["a", "b"], multi_label=False)
            params = {name: p for name, p in model.named_parameters() if "classifier" not in name}
            for p in params.values():
                p.requires_grad_(False)
            self._bases[key] = params
            self._buffers[key] = dict(model.named_buffers())
            return key, base.path, params

    def load_adapter_model(self, info: BundleInfo) -> tuple[torch.nn.Module, str, int]:
        """(model, base key, bytes of its own) for an adapter bundle, sharing the base."""
        from peft import PeftModel

        check_safe_model_dir(info.path / "adapter", f"bundle {info.path}: adapter")
        key, base_path, shared = self._base(info)
        model = self._skeleton(info, base_path, shared, self._buffers[key])
        model = PeftModel.from_pretrained(model, info.path / "adapter")
        unwrap_modules_to_save(model)
        model.eval()
        missing = [
            name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta
        ]
        if missing:
            raise InputError(
                f"adapter bundle {info.path}: no weights for {', '.join(missing[:3])} in the "
                "adapter or its base model"
            )
        shared_ptrs = {t.untyped_storage().data_ptr() for t in shared.values()}
        shared_ptrs |= {t.untyped_storage().data_ptr() for t in self._buffers[key].values()}
        own = {
            name: t.detach()
            for name, t in [*model.named_parameters(), *model.named_buffers()]
            if t.untyped_storage().data_ptr() not in shared_ptrs
        }
        layout = {name: (tuple(t.shape), t.dtype) for name, t in own.items()}
        template_key = (key, _shape_key(info))
        with self._lock:
            entry = self._templates.setdefault(template_key, (model, threading.Lock(), layout))
        template, lock, template_layout = entry
        if template_layout != layout:  # same configuration, different tensors: run it alone
            return model, key, tensor_bytes(own.values())
        return AdapterView(template, own, lock).eval(), key, tensor_bytes(own.values())

    @staticmethod
    def _skeleton(
        info: BundleInfo,
        base_path: Path,
        shared: dict[str, torch.nn.Parameter],
        buffers: dict[str, torch.Tensor],
    ) -> torch.nn.Module:
        """The bundle's classifier with the shared base tensors in it and a new head."""
        from transformers import AutoConfig, AutoModelForSequenceClassification

        labels = list(info.labels)
        config = AutoConfig.from_pretrained(
            base_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            problem_type="multi_label_classification"
            if info.multi_label
            else "single_label_classification",
            trust_remote_code=False,
        )
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
        for module_name, module in model.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, param in list(module._parameters.items()):
                same = shared.get(prefix + name)
                if param is None:
                    continue
                if same is not None and same.shape == param.shape:
                    module._parameters[name] = same
                else:  # the head: its trained values come with the adapter
                    module._parameters[name] = torch.nn.Parameter(
                        torch.zeros(param.shape, dtype=param.dtype), requires_grad=False
                    )
            for name, buffer in list(module._buffers.items()):
                shared_buffer = buffers.get(prefix + name)
                if (
                    buffer is not None
                    and shared_buffer is not None
                    and shared_buffer.shape == buffer.shape
                ):
                    module._buffers[name] = shared_buffer
        return model.eval()


def _shape_key(info: BundleInfo) -> str:
    """What fixes an adapter model's module tree and non-tensor state (LoRA scaling etc.):
    its peft configuration, label count and label kind."""
    config = json.loads((info.path / "adapter" / "adapter_config.json").read_text())
    for incidental in ("base_model_name_or_path", "revision", "inference_mode"):
        config.pop(incidental, None)
    shape = {"peft": config, "labels": len(info.labels), "multi_label": info.multi_label}
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()
