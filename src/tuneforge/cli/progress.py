"""A rich progress bar fed by training events."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tuneforge.data.report import format_duration


class TrainingProgress:
    """Event listener that draws a progress bar and prints one line per evaluation."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "plan":
            self.progress.console.print(plan_text(event))
        elif kind == "warning":
            self.progress.console.print(
                f"warning: {event['message']}", style="yellow", markup=False
            )
        elif kind == "start":
            if self.task is None:
                self.progress.start()
                self.task = self.progress.add_task(
                    "train", total=event["total_steps"], loss="-", speed="-"
                )
            self.progress.update(self.task, completed=event.get("resumed_from") or 0)
        elif kind == "step" and self.task is not None:
            self.progress.update(
                self.task,
                completed=event["step"],
                loss=f"{event['loss']:.4f}",
                speed=f"{event['examples_per_s']:.0f} ex/s",
            )
        elif kind == "metrics" and self.task is not None:  # a chat model's training step
            self.progress.update(
                self.task,
                completed=event["step"],
                loss=f"{event['train_loss']:.4f}",
                speed=f"{event['tokens_per_s']:.0f} tokens/s",
            )
        elif kind == "eval" and "valid_loss" in event["metrics"]:
            m = event["metrics"]
            mark = " [green]best" if event["improved"] else ""
            self.progress.console.print(
                f"  step {event['step']} epoch {event['epoch']:.2f}: validation loss "
                f"{m['valid_loss']:.4f} token accuracy {m['valid_mean_token_accuracy']:.4f}{mark}"
            )
        elif kind == "eval":
            m = event["metrics"]
            acc = m.get("accuracy", m.get("subset_accuracy"))
            mark = " [green]best" if event["improved"] else ""
            self.progress.console.print(
                f"  step {event['step']} epoch {event['epoch']:.2f}: validation "
                f"accuracy {acc:.4f} macro-F1 {m['macro_f1']:.4f}{mark}"
            )
        elif kind == "early_stop":
            self.progress.console.print(
                f"  early stop at step {event['step']} (best step {event['best_step']})"
            )
        elif kind == "summary":
            self.close()
            if event.get("epochs_trained") is not None:
                self.console.print(
                    f"  trained {event['epochs_trained']:g} of {event['epochs_planned']} epochs "
                    f"({event['steps']} of {event['steps_planned']} steps"
                    + (", stopped early)" if event.get("stopped_early") else ")"),
                    markup=False,
                )

    def close(self) -> None:
        """Stop drawing."""
        if self.task is not None:
            self.progress.stop()
            self.task = None


def plan_text(plan: dict[str, Any]) -> str:
    """The ``plan`` event in four short lines: schedule, stopping and input, machine, and
    why that many threads."""
    m = plan["measured"]
    return (
        f"plan: {plan['epochs']} epochs, {plan['total_steps']} steps "
        f"({plan['steps_per_epoch']}/epoch), batch {plan['batch_size']}, "
        f"lr {plan['learning_rate']:.1e} (head {plan['head_learning_rate']:.1e})\n"
        f"  early stop: {plan['patience']} evals without gain, from step "
        f"{plan['min_steps_before_stopping']}; max length {plan['max_length']}, "
        f"{plan['truncated_texts']} cut\n"
        f"  {plan['method']}, {plan['precision']}, {plan['threads']} thread(s); estimated "
        f"{format_duration(plan['estimated_seconds'])} (measured here: "
        f"{m['tokens_per_s']:,.0f} tokens/s)\n"
        f"  {plan['threads_reason']}"
    )
