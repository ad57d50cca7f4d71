"""Write a fine-tuned causal LM to a directory, all at once or not at all.

A LoRA run writes its adapter the way peft does (``adapter_config.json`` and
``adapter_model.safetensors``: load it with ``PeftModel.from_pretrained(base, directory)``);
a full run writes the whole model (``config.json``, ``model.safetensors``). Either way the
tokenizer goes beside it with the chat template the model was trained with. Everything is
written into a temporary directory next to the output and renamed into place when complete,
so an interrupted save never leaves a directory that looks usable.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from tuneforge.bundle import check_output_dir, publish

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def save_sft_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    output: Path,
    *,
    overwrite: bool = False,
) -> Path:
    """Save the trained adapter (or full weights) as safetensors, and the tokenizer.

    Args:
        model: What ``train_sft`` returned (a peft model for LoRA, the causal LM for full).
        tokenizer: The tokenizer it was trained with (its chat template is saved too).
        output: The directory to write.
        overwrite: Replace a non-empty ``output``.

    Returns:
        ``output``.

    Raises:
        InputError: ``output`` is a file, or a non-empty directory without ``overwrite``.
    """
    output = Path(output)
    check_output_dir(output, overwrite=overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        model.save_pretrained(staged, safe_serialization=True)  # type: ignore[operator]
        tokenizer.save_pretrained(staged)
        publish(staged, output)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return output
