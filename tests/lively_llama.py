"""The tiny random Llama with larger random weights: its greedy replies vary from prompt to
prompt and token to token (the default initialisation repeats one token), which tests of
decoding need: batches against single rows, streaming against whole replies."""

from __future__ import annotations

from pathlib import Path


def build_lively_llama(directory: Path, std: float = 0.6, seed: int = 1) -> Path:
    """Save the tiny chat Llama (``tests/tiny_llama.py``) with weights drawn N(0, std²)."""
    import torch
    from tests.tiny_llama import build_tiny_llama
    from transformers import AutoModelForCausalLM

    build_tiny_llama(directory)
    model = AutoModelForCausalLM.from_pretrained(
        directory, trust_remote_code=False, use_safetensors=True
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, std)
    model.save_pretrained(directory, safe_serialization=True)
    return directory
