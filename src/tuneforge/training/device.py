"""Device, precision and thread settings."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from tuneforge.errors import InputError


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
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_fast_bf16()
    if precision == "bf16" and not supported:
        raise InputError(
            "bf16 was requested but this hardware has no fast bf16 (needs AVX-512 BF16/AMX "
            "on CPU, or a bf16-capable GPU); use --precision auto or fp32"
        )
    return torch.bfloat16 if supported else None


def set_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads (default: the cores this process may use)."""
    if num_threads is None:
        try:
            num_threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - non-Linux
            num_threads = os.cpu_count() or 1
    torch.set_num_threads(max(1, num_threads))
    return torch.get_num_threads()
