"""The last N training checkpoints as loadable sub-bundles of the final bundle.

While training runs, ``CheckpointKeeper`` (an event listener) keeps the trainable weights
of the newest N resumable checkpoints (hard links; the loop itself keeps only the newest)
with the validation metrics at their step. When the bundle is written,
``write_checkpoint_bundles`` turns each into a self-contained bundle::

    checkpoints/step-<N>/
      tuneforge.json      the final bundle's manifest (thresholds reset to 0.5)
      model/ or adapter/  the weights at step N (safetensors)
      tokenizer/          hard links to (or copies of) the bundle's tokenizer files
      checkpoint.json     {"step": N, "metrics": validation metrics at step N}

so that ``tuneforge predict BUNDLE/checkpoints/step-N`` and the server's
``ft:...:ckpt-step-N`` model ids load them like any bundle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from tuneforge.bundle import MANIFEST, Manifest, atomic_write_json, write_manifest

CHECKPOINTS = "checkpoints"
CHECKPOINT_INFO = "checkpoint.json"
HEADLINE = ("accuracy", "subset_accuracy", "macro_f1", "micro_f1", "log_loss", "hamming_loss")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class CheckpointKeeper:
    """Training-event listener that keeps the weights of the last ``keep`` checkpoints.

    Args:
        checkpoint_dir: The run's checkpoint directory (``training.checkpoint`` layout).
        keep: How many checkpoints to keep (0: none, the listener does nothing).
    """

    def __init__(self, checkpoint_dir: Path, keep: int) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.kept_dir = checkpoint_dir.parent / "kept-checkpoints"
        self.keep = keep
        self._eval: tuple[int, dict[str, Any]] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        if self.keep <= 0:
            return
        if event["type"] == "eval":
            metrics = event.get("metrics") or {}
            headline = {k: metrics[k] for k in HEADLINE if k in metrics}
            self._eval = (int(event["step"]), headline)
        elif event["type"] == "checkpoint":
            self._keep(int(event["step"]), self.checkpoint_dir / event["path"])
        elif event["type"] == "resume":
            self._resumed(int(event["step"]), self.checkpoint_dir / event["checkpoint"])

    def _resumed(self, step: int, source: Path) -> None:
        """A resumed run starts from ``source``: keep it if the dead attempt died before
        keeping it, and forget anything kept past it."""
        for path in self.kept_dir.glob("step-*"):
            if int(path.name.split("-")[1]) > step:
                shutil.rmtree(path, ignore_errors=True)
        if not (self.kept_dir / f"step-{step:09d}" / CHECKPOINT_INFO).is_file():
            self._eval = None  # its validation metrics are not known here
            self._keep(step, source)

    def _keep(self, step: int, source: Path) -> None:
        target = self.kept_dir / f"step-{step:09d}"
        tmp = self.kept_dir / f".tmp-step-{step:09d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _link_or_copy(source / "trainable.safetensors", tmp / "trainable.safetensors")
        metrics = self._eval[1] if self._eval is not None else {}
        eval_step = self._eval[0] if self._eval is not None else None
        info = {"step": step, "metrics": metrics, "metrics_step": eval_step}
        (tmp / CHECKPOINT_INFO).write_text(json.dumps(info), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        for old in sorted(self.kept_dir.glob("step-*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def kept(self, last_step: int) -> list[Path]:
        """The kept checkpoints up to ``last_step`` (a resumed run may have left later
        ones behind), oldest first, at most ``keep``."""
        if self.keep <= 0 or not self.kept_dir.is_dir():
            return []
        found = [
            p
            for p in sorted(self.kept_dir.glob("step-*"))
            if (p / CHECKPOINT_INFO).is_file() and int(p.name.split("-")[1]) <= last_step
        ]
        return found[-self.keep :]


def write_checkpoint_bundles(
    keeper: CheckpointKeeper, model: Any, staged: Path, manifest: Manifest, steps: int
) -> list[Path]:
    """Write the kept checkpoints into ``staged/checkpoints/step-<N>/`` as bundles.

    Loads each checkpoint's trainable weights into ``model`` (which is left holding the
    last one's) and saves it as the final bundle is saved.

    Args:
        keeper: The run's keeper.
        model: The trained model (a transformers or peft model, as at training time).
        staged: The staged bundle (its ``tokenizer/`` is already written).
        manifest: The staged bundle's manifest.
        steps: The run's last optimizer step.

    Returns:
        The sub-bundle directories, oldest first.
    """
    from safetensors.torch import load_file

    from tuneforge.training.checkpoint import load_trainable_state

    written = []
    for kept in keeper.kept(steps):
        info = json.loads((kept / CHECKPOINT_INFO).read_text(encoding="utf-8"))
        out = staged / CHECKPOINTS / f"step-{info['step']}"
        load_trainable_state(model, load_file(kept / "trainable.safetensors"))
        if manifest.adapter:
            model.save_pretrained(out / "adapter")
        else:
            model.save_pretrained(out / "model", safe_serialization=True)
        (out / "tokenizer").mkdir(parents=True)
        for file in (staged / "tokenizer").iterdir():
            if file.is_file():
                _link_or_copy(file, out / "tokenizer" / file.name)
        # thresholds were tuned on the final weights; a checkpoint decides at 0.5
        write_manifest(out, dataclasses.replace(manifest, thresholds=None))
        atomic_write_json(out / CHECKPOINT_INFO, info)
        written.append(out)
    return written


def checkpoint_steps(bundle: Path) -> list[int]:
    """Steps of the checkpoint sub-bundles in a bundle, newest first."""
    folder = bundle / CHECKPOINTS
    if not folder.is_dir():
        return []
    steps = [
        int(p.name.removeprefix("step-"))
        for p in folder.glob("step-*")
        if p.name.removeprefix("step-").isdigit() and (p / MANIFEST).is_file()
    ]
    return sorted(steps, reverse=True)


def checkpoint_bundle(bundle: Path, step: int) -> Path | None:
    """The sub-bundle of ``step`` in ``bundle``, or None."""
    path = bundle / CHECKPOINTS / f"step-{step}"
    return path if (path / MANIFEST).is_file() else None
