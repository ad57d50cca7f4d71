"""AdamW with decoupled weight decay; linear or cosine decay after a linear warmup."""

from __future__ import annotations

import math

import torch
from torch import nn

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def build_optimizer(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    device: torch.device,
    head_prefixes: tuple[str, ...] = (),
    head_learning_rate: float | None = None,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no decay on biases and norms.

    Parameters whose names start with ``head_prefixes`` (a freshly initialised head) get
    ``head_learning_rate``. The fused implementation is used where torch has it (CPU and
    CUDA): on a small encoder the unfused step costs several times more than the fused one.
    """
    head_lr = head_learning_rate or learning_rate
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (bool(head_prefixes) and name.startswith(head_prefixes), name.endswith(_NO_DECAY))
            groups.setdefault(key, []).append(param)
    param_groups = [
        {
            "params": params,
            "lr": head_lr if is_head else learning_rate,
            "weight_decay": 0.0 if no_decay else weight_decay,
        }
        for (is_head, no_decay), params in sorted(groups.items())
    ]
    fused = device.type in {"cpu", "cuda"}
    return torch.optim.AdamW(param_groups, lr=learning_rate, fused=fused)


def linear_schedule(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 to the peak, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        remaining = total_steps - step
        return max(0.0, remaining / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 to the peak, then cosine decay to 0 at ``total_steps`` (the
    schedule TRL and most generative fine-tuning recipes use)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
