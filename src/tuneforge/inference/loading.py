"""Load a bundle's PyTorch model: the one place that turns ``model/`` or ``adapter/`` into a
module ready to run, and checks an adapter's base model is the one it was trained on."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.bundle import MANIFEST, BundleInfo, read_bundle
from tuneforge.errors import InputError
from tuneforge.models.registry import (
    BaseModel,
    GenerativeBase,
    resolve_base_model,
    resolve_generative_base,
    weights_sha256,
)
from tuneforge.models.safety import check_safe_model_dir

if TYPE_CHECKING:  # torch and transformers load only when a torch model is built
    import torch
    from transformers import PreTrainedModel


def check_safe_bundle(info: BundleInfo) -> None:
    """Refuse a bundle whose model, adapter or tokenizer would run code or unpickle on load,
    or that lacks them.

    Raises:
        InputError: No ``tokenizer/`` folder, no ``model/`` (``adapter/``) folder with
            safetensors weights, pickle-only weights, ``auto_map`` custom code, ``.py``
            files, or a ``max_length`` past the model's position embeddings.
    """
    part = "adapter" if info.adapter else "model"
    check_safe_model_dir(info.path / part, f"bundle {info.path}: {part}")
    if not any((info.path / part).glob("*.safetensors")):
        raise InputError(
            f"bundle {info.path} has no {part}/ folder with safetensors weights; copy the "
            "whole --output directory of `tuneforge train`"
        )
    if not (info.path / "tokenizer").is_dir():
        raise InputError(
            f"bundle {info.path} has no tokenizer/ folder; copy the whole --output directory "
            "of `tuneforge train`"
        )
    check_safe_model_dir(
        info.path / "tokenizer", f"bundle {info.path}: tokenizer", needs_weights=False
    )
    if not info.adapter:
        check_max_length(info, info.path / "model" / "config.json")


def check_max_length(info: BundleInfo, config_path: Path) -> None:
    """Refuse a bundle whose ``max_length`` is longer than its model's position embeddings
    (``config_path``: the model's ``config.json``), which would fail on every long input.

    Raises:
        InputError: The config is unreadable, or ``max_length`` is past its limit.
    """
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"bundle {info.path}: cannot read {config_path.name}: {exc}") from None
    limit = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if isinstance(limit, int) and info.max_length > limit:
        raise InputError(
            f"bundle {info.path}: max_length {info.max_length} in its manifest is longer than "
            f"the model's {limit} positions; the bundle is damaged or was edited"
        )


def check_base_model(info: BundleInfo, actual_sha256: str | None = None) -> BaseModel:
    """The base model an adapter bundle was trained on, checked by its weights' hash.

    Args:
        info: An adapter bundle.
        actual_sha256: The hash of the installed base weights when the caller knows it
            already (None: computed here).

    Raises:
        InputError: The base model is not installed, or its weights differ.
    """
    spec = info.manifest.base_model
    base = resolve_base_model(spec.path or spec.name)
    actual = actual_sha256 if actual_sha256 is not None else weights_sha256(base.path)
    if actual != spec.sha256:
        raise InputError(
            f"bundle {info.path} was trained on base model {spec.name!r} with weights "
            f"sha256 {spec.sha256[:16]}…, but {base.path} has {actual[:16]}…; "
            "install the same base model version"
        )
    return base


def unwrap_modules_to_save(model: torch.nn.Module) -> None:
    """Put the trained copies of peft's ``modules_to_save`` (head, pooler) in place.

    peft's generic unload (used by IA3) copies ``weight`` onto each unwrapped module and so
    fails on one without its own weight (BERT's pooler, RoBERTa's classification head); with
    the wrappers gone, ``merge_and_unload`` only has the adapter layers left to fold.
    """
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, child_name = name.rpartition(".")
            trained = module.modules_to_save[module.active_adapters[0]]
            setattr(model.get_submodule(parent_name), child_name, trained)


def load_bundle_model(info: BundleInfo) -> PreTrainedModel:
    """The bundle's classifier in fp32, on the CPU, as a plain transformers model.

    A full bundle loads ``model/``; an adapter bundle builds its base model (after checking
    the weights' hash) and folds the adapter into it, so inference costs what the base
    model costs.

    Raises:
        InputError: Unsafe files (pickle weights, custom code), or an adapter whose base
            model is missing or differs.
    """
    import torch

    from tuneforge.models.classifier import build_classifier

    check_safe_bundle(info)
    if not info.adapter:
        from transformers import AutoModelForSequenceClassification

        level = logging.getLogger("transformers").level
        logging.getLogger("transformers").setLevel(logging.ERROR)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                info.path / "model",
                dtype=torch.float32,
                use_safetensors=True,
                trust_remote_code=False,
            )
        finally:
            logging.getLogger("transformers").setLevel(level)
        if model.config.num_labels != len(info.labels):
            raise InputError(
                f"bundle {info.path}: its manifest names {len(info.labels)} labels but its "
                f"model has {model.config.num_labels} outputs; the bundle is damaged or was "
                "edited"
            )
        return model
    base = check_base_model(info)
    check_max_length(info, base.path / "config.json")
    from peft import PeftModel

    classifier = build_classifier(base.path, info.labels, multi_label=info.multi_label)
    model = PeftModel.from_pretrained(classifier, info.path / "adapter")
    unwrap_modules_to_save(model)
    return model.merge_and_unload()


# ------------------------------------------------------------------- generative bundles


def open_generative_bundle(model_or_dir: str | Path) -> BundleInfo | None:
    """The opened, checked generative bundle when ``model_or_dir`` is a bundle directory,
    else None (a model name or a plain model directory).

    Raises:
        InputError: A broken manifest, or a classifier bundle.
    """
    path = Path(model_or_dir).expanduser()
    if not (path / MANIFEST).is_file():
        return None
    info = read_bundle(path)
    if not info.manifest.generative:
        raise InputError(
            f"{path} is a classifier bundle ({info.manifest.task}, {len(info.labels)} labels): "
            f"it predicts labels and does not generate text; use `tuneforge predict {path}` "
            "or Predictor.load, or pass a chat model or a bundle of `tuneforge train --task "
            "generate`"
        )
    check_safe_bundle(info)
    return info


def check_generative_base(info: BundleInfo, **kwargs: Any) -> GenerativeBase:
    """A generative bundle's base model, checked against the hash the bundle records
    (``kwargs`` go to ``resolve_generative_base``: ``notify``).

    Raises:
        InputError: The base is missing, or its weights are not the ones trained on.
    """
    ref = info.manifest.base_model
    if not info.adapter:  # full weights: the bundle is the whole model
        return GenerativeBase(
            name=ref.name, path=info.path / "model", licence=None, source="bundle",
            sha256=ref.sha256,
        )  # fmt: skip
    where = ref.name if ref.source == "package" else (ref.path or ref.name)
    try:
        base = resolve_generative_base(where, **kwargs)
    except InputError as exc:
        raise InputError(
            f"bundle {info.path} needs its base model {ref.name!r} ({where}), which cannot be "
            f"loaded: {exc}"
        ) from None
    actual = base.sha256 if ref.source == "package" else weights_sha256(base.path)
    if actual != ref.sha256:
        raise InputError(
            f"bundle {info.path} was trained on base model {ref.name!r} with weights sha256 "
            f"{ref.sha256[:16]}…, but {where} now has {str(actual)[:16]}…; the adapter only "
            "fits the base it was trained on: restore that base model, or train again"
        )
    return base


def load_generative_bundle(info: BundleInfo, base: GenerativeBase, dtype: Any) -> tuple[Any, Any]:
    """The bundle's model (the base with the adapter merged in, or its full weights) and
    its tokenizer (with the chat template it was trained with)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(info.path / "tokenizer", trust_remote_code=False)
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"bundle {info.path}: its tokenizer has no chat template")
    if not info.adapter:
        model = AutoModelForCausalLM.from_pretrained(
            info.path / "model", trust_remote_code=False, use_safetensors=True, dtype=dtype
        )
        return model, tokenizer
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(
        base.path, trust_remote_code=False, use_safetensors=True, dtype=torch.float32
    )
    merged = PeftModel.from_pretrained(model, str(info.path / "adapter")).merge_and_unload()
    return merged.to(dtype), tokenizer
