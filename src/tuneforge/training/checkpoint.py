"""Resumable checkpoints, written so that a crash never leaves one that looks complete.

Layout under the run's checkpoint directory::

    step-000120/            one complete checkpoint (written as .tmp-*, then renamed)
      trainable.safetensors   the parameters that learn (frozen ones come from the base)
      optimizer.pt            optimizer state (tensors only; loaded with weights_only=True)
      rng.safetensors         torch RNG state
      state.json              loop position, scheduler, best-so-far, event count
    best/trainable.safetensors + best.json   the best weights by the selection metric
    latest.json             points at the newest complete checkpoint (atomic replace)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tuneforge.bundle import atomic_write_json


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that require grad, by name."""
    return {
        name: param.detach().clone().contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable parameters into ``model`` (names must match exactly)."""
    params = dict(model.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise ValueError(f"checkpoint has parameters the model lacks: {missing[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def _new_tmp_dir(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))


def save_checkpoint(
    directory: Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: dict[str, torch.Tensor],
    state: dict[str, Any],
    keep: int = 1,
) -> Path:
    """Write a complete checkpoint atomically and point ``latest.json`` at it.

    Args:
        directory: The run's checkpoint directory.
        step: Optimizer step (names the checkpoint).
        model: The model being trained (its trainable parameters are saved).
        optimizer: Its state is saved.
        rng: RNG state to restore on resume.
        state: JSON-serialisable loop state.
        keep: How many complete step checkpoints to keep.

    Returns:
        The checkpoint's directory.
    """
    tmp = _new_tmp_dir(directory)
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    save_file({k: v.contiguous() for k, v in rng.items()}, tmp / "rng.safetensors")
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    final = directory / f"step-{step:09d}"
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    atomic_write_json(directory / "latest.json", {"checkpoint": final.name, "step": step})
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    pointer = directory / "latest.json"
    if not pointer.is_file():
        return None
    name = json.loads(pointer.read_text())["checkpoint"]
    path = directory / name
    return path if (path / "state.json").is_file() else None


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model and optimizer from ``path``; return (loop state, rng state)."""
    load_trainable_state(model, load_file(path / "trainable.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    rng = load_file(path / "rng.safetensors")
    return json.loads((path / "state.json").read_text()), rng


def save_best(directory: Path, model: nn.Module, info: dict[str, Any]) -> None:
    """Store the current trainable weights as the best so far (atomic)."""
    tmp = _new_tmp_dir(directory)
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    (tmp / "best.json").write_text(json.dumps(info, indent=1))
    best = directory / "best"
    old = directory / f".old-best-{tmp.name}"
    if best.exists():
        best.rename(old)
    tmp.rename(best)
    shutil.rmtree(old, ignore_errors=True)


def load_best(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(weights, info) of the best checkpoint, or None if there is none."""
    best = directory / "best"
    if not (best / "best.json").is_file():
        return None
    return load_file(best / "trainable.safetensors"), json.loads((best / "best.json").read_text())
