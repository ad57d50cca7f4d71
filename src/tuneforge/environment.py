"""What a run ran on: versions, hardware, threads (the bundle's environment.json)."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_environment() -> dict[str, Any]:
    """Versions of the libraries that shape results, and the hardware."""
    import torch

    from tuneforge.training.device import cpu_has_fast_bf16

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {
            name: _version(name)
            for name in ("tuneforge", "torch", "transformers", "tokenizers", "peft", "numpy")
        },
        "cpu": _cpu_model(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def quiet_libraries() -> None:
    """Our own progress reporting is enough: silence the libraries' bars and info logs.

    Through the environment, read when transformers loads, so that commands that never
    need transformers (``--version``, ``predict`` on ONNX) do not pay for importing it.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already loaded (e.g. main() called in-process)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
