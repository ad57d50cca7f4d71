"""Training events as TensorBoard scalars (event files; works offline).

Tags: ``train/loss``, ``train/learning_rate``, ``train/grad_norm`` per step;
``validation/<metric>`` per evaluation; ``test/<metric>`` and ``final_validation/<metric>``
at the end (at the last step). View with ``tensorboard --logdir DIR``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

STEP_SCALARS = {"loss": "train/loss", "lr": "train/learning_rate", "grad_norm": "train/grad_norm"}


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


class TensorBoardListener:
    """A training-event listener that writes TensorBoard event files into ``logdir``.

    Args:
        logdir: Directory for the ``events.out.tfevents.*`` files (created).
    """

    def __init__(self, logdir: Path) -> None:
        from tensorboardX import SummaryWriter

        logdir.mkdir(parents=True, exist_ok=True)
        self.logdir = logdir
        self.writer = SummaryWriter(logdir=str(logdir), flush_secs=5)
        self.last_step = 0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "step":
            self.last_step = step = int(event["step"])
            for key, tag in STEP_SCALARS.items():
                value = event.get(key)
                if value is not None:
                    self.writer.add_scalar(tag, float(value), step)
        elif kind == "eval":
            for key, value in _numbers(event.get("metrics") or {}).items():
                self.writer.add_scalar(f"validation/{key}", value, int(event["step"]))
        elif kind == "summary":
            for split, tag in (("test", "test"), ("validation", "final_validation")):
                for key, value in _numbers(event.get(split) or {}).items():
                    self.writer.add_scalar(f"{tag}/{key}", value, self.last_step)
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
