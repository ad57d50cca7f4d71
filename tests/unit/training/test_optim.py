import pytest
import torch
from torch import nn

from tuneforge.training.optim import build_optimizer, linear_schedule


class TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.LayerNorm = nn.LayerNorm(4)
        self.classifier = nn.Linear(4, 2)


def _optimizer(model: nn.Module, head_lr: float, weight_decay: float) -> torch.optim.AdamW:
    return build_optimizer(
        model,
        learning_rate=1e-4,
        weight_decay=weight_decay,
        device=torch.device("cpu"),
        head_prefixes=("classifier",),
        head_learning_rate=head_lr,
    )


def _lrs(opt: torch.optim.Optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


def test_head_gets_its_own_rate_and_norms_and_biases_no_decay():
    model = TinyClassifier()
    opt = build_optimizer(
        model,
        learning_rate=1e-4,
        weight_decay=0.01,
        device=torch.device("cpu"),
        head_prefixes=("classifier",),
        head_learning_rate=2e-3,
    )
    lrs = _lrs(opt)
    assert lrs[id(model.encoder.weight)] == (1e-4, 0.01)
    assert lrs[id(model.encoder.bias)] == (1e-4, 0.0)
    assert lrs[id(model.LayerNorm.weight)] == (1e-4, 0.0)
    assert lrs[id(model.classifier.weight)] == (2e-3, 0.01)
    assert lrs[id(model.classifier.bias)] == (2e-3, 0.0)
    assert sum(len(g["params"]) for g in opt.param_groups) == 6


def test_frozen_parameters_are_left_out_and_schedule_scales_every_group():
    model = TinyClassifier()
    model.encoder.weight.requires_grad_(False)
    opt = build_optimizer(
        model,
        learning_rate=1e-4,
        weight_decay=0.0,
        device=torch.device("cpu"),
        head_prefixes=("classifier",),
        head_learning_rate=1e-3,
    )
    assert id(model.encoder.weight) not in _lrs(opt)
    sched = linear_schedule(opt, warmup_steps=2, total_steps=10)
    for _ in range(2):
        opt.step()
        sched.step()
    # After warmup both groups sit at their own peak; the ratio is kept.
    rates = sorted({g["lr"] for g in opt.param_groups})
    assert rates[-1] / rates[0] == pytest.approx(10.0)
