"""Greedy replies to a few fixed validation prompts, to watch a generative fine-tune learn.

At each evaluation the model answers the same prompts (the first validation conversations),
so the events show its replies change from the base model's towards the references.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tuneforge.data.conversations import Conversation
from tuneforge.models.forward import autocast_context

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def prompt_and_reference(conversation: Conversation) -> tuple[list[dict[str, str]], str] | None:
    """The messages before the conversation's last trained assistant turn, and that turn's
    text; None when no turn is trained."""
    for k in range(len(conversation.turns) - 1, -1, -1):
        if conversation.turns[k].trained:
            messages = conversation.messages()
            return messages[:k], conversation.turns[k].content
    return None


def sample_replies(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    *,
    max_new_tokens: int,
    autocast_dtype: torch.dtype | None = None,
) -> list[dict[str, Any]]:
    """The model's greedy reply to each conversation's prompt (see ``prompt_and_reference``).

    Args:
        model: A causal LM (or a peft model around one).
        tokenizer: Its tokenizer with a chat template; generation stops at its eos token
            (the end-of-turn token of chat models).
        conversations: The conversations to answer (without a trained turn: skipped).
        max_new_tokens: Most tokens per reply.
        autocast_dtype: Autocast precision (None: fp32).

    Returns:
        One ``{"line", "prompt", "reference", "completion"}`` per answered conversation.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    samples = []
    try:
        for conversation in conversations:
            pair = prompt_and_reference(conversation)
            if pair is None:
                continue
            prompt, reference = pair
            encoded: Any = tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            inputs = {k: v.to(device) for k, v in encoded.items()}
            with torch.no_grad(), autocast_context(device, autocast_dtype):
                out = model.generate(  # type: ignore[operator]
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
            reply = out[0, inputs["input_ids"].shape[1] :]
            samples.append(
                {
                    "line": conversation.line,
                    "prompt": prompt,
                    "reference": reference,
                    "completion": tokenizer.decode(reply, skip_special_tokens=True),
                }
            )
    finally:
        model.train(was_training)
    return samples
