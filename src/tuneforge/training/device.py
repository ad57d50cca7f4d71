"""Device, precision and thread settings."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.errors import InputError
from tuneforge.training.threads import apply_threads

if TYPE_CHECKING:  # torch loads lazily: `tuneforge predict` on ONNX never needs it
    import torch


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX).

    Without them torch emulates bf16 and autocast is many times slower than fp32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def pick_device() -> torch.device:
    """CUDA when available, else CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None means plain fp32).

    Args:
        precision: ``auto``, ``fp32`` or ``bf16``.
        device: Where the model runs.

    Raises:
        InputError: ``bf16`` requested on hardware without it.
    """
    if precision == "fp32":
        return None
    import torch

    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_fast_bf16()
    if precision == "bf16" and not supported:
        raise InputError(
            "bf16 was requested but this hardware has no fast bf16 (needs AVX-512 BF16/AMX "
            "on CPU, or a bf16-capable GPU); use --precision auto or fp32"
        )
    return torch.bfloat16 if supported else None


def set_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads: ``num_threads``, or the default choice; returns the count.

    The default is one thread per CPU this process may use (affinity and cgroup quota)
    that other processes leave free; ``tuneforge.training.threads.apply_threads`` returns
    the reason too.
    """
    return apply_threads(num_threads).threads
