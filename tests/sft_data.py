"""Short chat conversations the generative training tests use with the tiny Llama."""

from __future__ import annotations

from pathlib import Path

from tuneforge.data.conversations import Conversation, Turn

QA = [
    ("Hello there!", "How are you today?"),
    ("What is the capital of France?", "Paris."),
    ("Tell me a joke.", "Why did the chicken cross the road?"),
    ("Count to five.", "one two three four five"),
    ("Where is The Eagle?", "near the river"),
    ("What food?", "Italian food."),
    ("Thanks", "Good, bye."),
    ("Who are you?", "I am fine, thank you."),
]


def conversations(pairs=QA, system: str | None = None) -> list[Conversation]:
    """One user turn and one assistant reply per pair (after a system turn if given)."""
    out = []
    for line, (question, answer) in enumerate(pairs, start=1):
        turns = [Turn("user", question), Turn("assistant", answer)]
        if system is not None:
            turns.insert(0, Turn("system", system))
        out.append(Conversation(tuple(turns), line))
    return out


def load_tiny(directory: Path):
    """(model, tokenizer) of a tiny Llama directory, model in fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(directory), AutoTokenizer.from_pretrained(directory)


def greedy_reply(model, tokenizer, conversation: Conversation, max_new_tokens: int = 30) -> str:
    """The model's greedy continuation of the conversation's prompt (its turns before the
    first assistant turn), special tokens kept, stopping at the end-of-turn token."""
    import torch

    prompt = []
    for turn in conversation.turns:
        if turn.role == "assistant":
            break
        prompt.append({"role": turn.role, "content": turn.content})
    inputs = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])
