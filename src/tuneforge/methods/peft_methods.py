"""peft adapter methods: ``lora`` and ``ia3`` for classifiers, LoRA for causal LMs.

The classifier methods wrap the classifier in a ``PeftModel`` with task type SEQ_CLS, so the
new head is trained and saved beside the adapter (peft's ``modules_to_save``). Generative
fine-tuning wraps a causal LM with task type CAUSAL_LM (``prepare_causal_lora``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from tuneforge.config import MethodConfig
from tuneforge.methods.head import head_parameter_prefixes
from tuneforge.methods.registry import Method, register_method
from tuneforge.methods.targets import check_target_modules, module_names

# peft knows target modules for common model types; these cover BERT-style encoders
# whose names peft may not list.
_BERT_LORA_TARGETS = ["query", "value"]
_BERT_IA3_TARGETS = ["key", "value", "output.dense"]
_BERT_IA3_FEEDFORWARD = ["output.dense"]


def _is_bert_like(model: nn.Module) -> bool:
    return any(name.endswith("attention.self.query") for name, _ in model.named_modules())


def _modules_to_save(model: nn.Module) -> list[str]:
    # peft matches these by key suffix: "pooler" also matches "bert.pooler".
    present = {name.split(".")[-1] for name, _ in model.named_modules()}
    return [p.split(".")[-1] for p in head_parameter_prefixes(model) if p.split(".")[-1] in present]


def prepare_lora(model: nn.Module, config: MethodConfig) -> nn.Module:
    """Add LoRA matrices to the attention projections; train them and the head."""
    from peft import LoraConfig, TaskType, get_peft_model  # heavy import: only when used

    targets = list(config.target_modules) if config.target_modules else None
    if targets is None and _is_bert_like(model):
        targets = _BERT_LORA_TARGETS
    elif targets is not None:
        check_target_modules(module_names(model), targets)
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        modules_to_save=_modules_to_save(model),
    )
    return get_peft_model(model, peft_config)


ALL_LINEAR = "all-linear"
"""peft's name for every linear layer of a model except its output layer."""


def prepare_causal_lora(
    model: nn.Module,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: Sequence[str] | str = ALL_LINEAR,
) -> nn.Module:
    """Wrap a causal language model in LoRA adapters (peft task type CAUSAL_LM).

    Only the adapter matrices learn; the base weights, the embeddings and the output layer
    stay frozen (``all-linear`` leaves the output layer out).

    Args:
        model: A ``transformers`` causal LM.
        r: LoRA rank.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / r``).
        dropout: Dropout on the LoRA path.
        target_modules: ``all-linear`` (every linear layer: attention and MLP projections),
            or module names (checked against the model first).

    Raises:
        SettingError: A target module name matches no module of the model.
    """
    from peft import LoraConfig, TaskType, get_peft_model  # heavy import: only when used

    targets: list[str] | str
    if isinstance(target_modules, str):
        targets = target_modules
        if targets != ALL_LINEAR:
            check_target_modules(module_names(model), [targets])
    else:
        targets = list(target_modules)
        check_target_modules(module_names(model), targets)
    peft_config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
    )
    return get_peft_model(model, peft_config)


def prepare_ia3(model: nn.Module, config: MethodConfig) -> nn.Module:
    """Add (IA)^3 scaling vectors to keys, values and feed-forward outputs; train them and
    the head."""
    from peft import IA3Config, TaskType, get_peft_model  # heavy import: only when used

    targets = list(config.target_modules) if config.target_modules else None
    feedforward = None
    if targets is None and _is_bert_like(model):
        targets, feedforward = _BERT_IA3_TARGETS, _BERT_IA3_FEEDFORWARD
    elif targets is not None:
        check_target_modules(module_names(model), targets)
    peft_config = IA3Config(
        task_type=TaskType.SEQ_CLS,
        target_modules=targets,
        feedforward_modules=feedforward,
        modules_to_save=_modules_to_save(model),
    )
    return get_peft_model(model, peft_config)


register_method(
    Method(
        name="lora",
        description="LoRA adapters on attention (peft) plus the head",
        prepare=prepare_lora,
        adapter=True,
        learning_rate=5e-4,
        uses_target_modules=True,
    )
)
register_method(
    Method(
        name="ia3",
        description="(IA)^3 scaling vectors (peft) plus the head",
        prepare=prepare_ia3,
        adapter=True,
        learning_rate=3e-3,
        uses_target_modules=True,
    )
)
