"""Which modules an adapter method may target: the names the base model has.

peft matches a target name against every module's dotted name, exactly or as its last
components (``query`` matches ``bert.encoder.layer.0.attention.self.query``). A name that
matches nothing makes peft raise deep inside training; checking it first turns that into an
error that names the setting and lists the names the model has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from torch import nn

from tuneforge.config import SettingError
from tuneforge.models.safety import check_safe_model_dir

SHOWN_NAMES = 40


def module_names(model: nn.Module) -> list[str]:
    """The dotted names of every submodule of ``model``."""
    return [name for name, _ in model.named_modules() if name]


def base_module_names(model_dir: Path) -> list[str]:
    """The module names of the classifier built on ``model_dir``, without loading its weights
    (the model is built on the meta device from its ``config.json``).

    Raises:
        InputError: The directory is not a model that loads without running its code.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    check_safe_model_dir(model_dir, "model", needs_weights=False)
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    return module_names(model)


def check_target_modules(names: Iterable[str], targets: Sequence[str]) -> None:
    """Raise unless every target matches a module of the model.

    Args:
        names: The model's dotted module names.
        targets: The ``target_modules`` asked for.

    Raises:
        SettingError: Some targets match no module (``method.target_modules``); the message
            lists them and the leaf names the model has.
    """
    names = list(names)
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if not unknown:
        return
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
    shown = ", ".join(leaves[:SHOWN_NAMES]) + (", ..." if len(leaves) > SHOWN_NAMES else "")
    raise SettingError(
        "method.target_modules",
        f"method.target_modules: the base model has no module named "
        f"{', '.join(repr(t) for t in unknown)}; module names it has include: {shown}",
    )
