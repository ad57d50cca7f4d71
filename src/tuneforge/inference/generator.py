"""Generate chat replies with a causal language model: greedy or sampled, streamed or not.

``Generator.load("default-chat")`` (or a local Hugging Face causal-LM directory) loads the
model and its tokenizer; ``chat`` answers one conversation, ``stream`` yields the reply's
text as it decodes, ``chat_batch`` answers several conversations at once.

The decoding loop is tuneforge's own (a forward pass per token over the model's KV cache,
``past_key_values``) rather than ``transformers``' ``generate``: streaming, stop strings,
holding back text that may begin a stop string, and stopping a row between two steps are
then plain code at each step, and the same loop serves one conversation or a left-padded
batch. The sampling contract follows OpenAI's chat completions: ``max_tokens``,
``temperature`` (0 = greedy), ``top_p``, ``stop`` (up to 4 strings, not returned),
``seed``, and ``finish_reason`` ``"stop"`` or ``"length"``.

Decoding one token at a time is latency-bound: on a machine where another process holds a
core, OpenMP threads that spin while they wait stall every step (measured on 2 CPUs: ~2
instead of ~18 tokens/s). The ``tuneforge`` command makes idle threads sleep unless the
machine is idle when it starts; a program that imports this module can do the same with
``tuneforge.training.threads.set_wait_policy()`` before it imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuneforge.data.conversations import ROLES
from tuneforge.errors import InputError
from tuneforge.inference.loading import (
    check_generative_base,
    load_generative_bundle,
    open_generative_bundle,
)
from tuneforge.models.registry import GenerativeBase, resolve_generative_base
from tuneforge.training.device import cpu_has_fast_bf16, pick_device
from tuneforge.training.threads import ThreadChoice, apply_threads

if TYPE_CHECKING:  # torch loads lazily
    import torch

FinishReason = Literal["stop", "length"]
Precision = Literal["auto", "fp32", "bf16"]

DEFAULT_MAX_TOKENS = 256
"""Tokens generated when ``max_tokens`` is not given (fewer where the context ends first)."""
MAX_STOP_STRINGS = 4
"""Stop strings allowed at most (OpenAI's limit)."""
_ROLES_TEXT = ", ".join(repr(r) for r in ROLES)


@dataclass(frozen=True)
class Completion:
    """One generated reply.

    Attributes:
        text: The reply, without the end-of-turn token or the stop string that ended it.
        finish_reason: ``"stop"`` (end of turn or a stop string) or ``"length"``
            (``max_tokens`` reached).
        prompt_tokens: Tokens of the rendered conversation (chat template included).
        completion_tokens: Tokens generated, the end-of-turn token included.
    """

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


# ----------------------------------------------------------------------------- validation


def message_problem(message: Any, index: int) -> tuple[str, str, str] | None:
    """What is wrong with one chat message, or None.

    Returns:
        ``(field, what is wrong, fix)`` where field is e.g. ``messages[1].role``.
    """
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        return (
            where,
            f"message {index + 1} is not an object",
            ('write each message as {"role": ..., "content": ...}'),
        )
    role = message.get("role")
    if role not in ROLES:
        shown = "missing" if role is None else repr(role)
        fix = "use 'system' for instructions" if role == "developer" else f"use {_ROLES_TEXT}"
        return f"{where}.role", f"unknown role ({shown}); the roles are {_ROLES_TEXT}", fix
    content = message.get("content")
    if not isinstance(content, str):
        kind = "missing" if content is None else type(content).__name__
        return f"{where}.content", f"content is not a string ({kind})", "give the text as a string"
    return None


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """Check a conversation and return it as ``[{"role", "content"}, ...]``.

    Raises:
        InputError: Not a non-empty list of messages with a known role and string content.
    """
    if not isinstance(messages, list) or not messages:
        raise InputError(
            'messages must be a non-empty list of {"role": ..., "content": ...} objects'
        )
    for index, message in enumerate(messages):
        problem = message_problem(message, index)
        if problem is not None:
            field, what, fix = problem
            raise InputError(f"{field}: {what} ({fix})")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


@dataclass(frozen=True)
class Sampling:
    """Checked generation settings (see ``Generator.chat``)."""

    max_tokens: int | None
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None


def check_sampling(
    max_tokens: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: str | Sequence[str] | None = None,
    seed: int | None = None,
) -> Sampling:
    """Validate generation settings as OpenAI does; return them normalised.

    Raises:
        InputError: A value out of range, naming the parameter and the range.
    """
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise InputError(f"max_tokens must be an integer >= 1 (got {max_tokens!r})")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or not 0 <= temperature <= 2
    ):
        raise InputError(f"temperature must be between 0 and 2 (got {temperature!r})")
    if (
        isinstance(top_p, bool)
        or not isinstance(top_p, int | float)
        or not math.isfinite(top_p)
        or not 0 < top_p <= 1
    ):
        raise InputError(f"top_p must be greater than 0 and at most 1 (got {top_p!r})")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InputError(f"seed must be an integer (got {seed!r})")
    stops: tuple[str, ...]
    if stop is None:
        stops = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, Sequence) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise InputError("stop must be a string or a list of strings")
    if len(stops) > MAX_STOP_STRINGS:
        raise InputError(f"stop takes at most {MAX_STOP_STRINGS} strings (got {len(stops)})")
    if any(s == "" for s in stops):
        raise InputError("stop strings must not be empty")
    return Sampling(max_tokens, float(temperature), float(top_p), stops, seed)


# ----------------------------------------------------------------------------- text


class _Reply:
    """One row's reply as it decodes: its tokens, the text safe to show, and stop strings.

    Text is shown only when complete (a character split across tokens waits for its last
    byte) and when it cannot be the start of a stop string (held back until it is known).
    """

    def __init__(self, tokenizer: Any, stops: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.tokens: list[int] = []
        self.text = ""  # decoded text, complete characters only, cut at a stop string
        self.shown = 0  # characters of ``text`` already given out
        self.finish: FinishReason | None = None

    def add(self, token: int, end_of_turn: bool) -> None:
        """Take one generated token (``end_of_turn``: the model's end-of-turn token)."""
        self.tokens.append(token)
        if end_of_turn:
            self.finish = "stop"
            self.text = self._decode(final=True)
            return
        text = self._decode(final=False)
        cut = self._stop_at(text)
        if cut is not None:
            self.text = text[:cut]
            self.finish = "stop"
            return
        self.text = text

    def end(self) -> None:
        """The token budget is spent: the reply is what has decoded."""
        self.finish = "length"
        text = self._decode(final=True)
        cut = self._stop_at(text)
        self.text = text if cut is None else text[:cut]

    def delta(self) -> str:
        """Text not given out yet that is safe to give (all of it once finished)."""
        safe = len(self.text) if self.finish else len(self.text) - self._held_back()
        if safe <= self.shown:
            return ""
        piece = self.text[self.shown : safe]
        self.shown = safe
        return piece

    def _decode(self, final: bool) -> str:
        text: str = self.tokenizer.decode(
            self.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        if not final:
            # a character whose bytes span several tokens decodes as U+FFFD until complete
            text = text.rstrip("\ufffd")
        return text

    def _stop_at(self, text: str) -> int | None:
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(found) if found else None

    def _held_back(self) -> int:
        """Length of the longest end of ``text`` that begins some stop string."""
        held = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.text)), held, -1):
                if self.text.endswith(stop[:k]):
                    held = k
                    break
        return held


# ----------------------------------------------------------------------------- bundles


# ----------------------------------------------------------------------------- generator


def _pick_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """The next token of one row: argmax when greedy, else top-p sampling."""
    import torch

    if temperature == 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = torch.where(before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (model.generation_config, model.config):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


class Generator:
    """A causal language model with its tokenizer and chat template, ready to answer.

    Load with ``Generator.load``; then ``chat``, ``stream`` or ``chat_batch``.

    Attributes:
        base: The resolved base model (name, directory, licence).
        dtype: The weights' dtype (``torch.float32`` or ``torch.bfloat16``).
        context: Tokens the model attends to at most (prompt and reply together).
        threads: The CPU thread count chosen, and why.
        bundle: The bundle directory when loaded from one (``base`` is then its base
            model, or the bundle's ``model/`` for full weights), else None.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        base: GenerativeBase,
        threads: ThreadChoice | None = None,
        bundle: Path | None = None,
    ) -> None:
        self.model = model
        self.bundle = bundle
        self.tokenizer = tokenizer
        self.base = base
        self.threads = threads
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        limits = [getattr(model.config, "max_position_embeddings", None)]
        limits.append(getattr(tokenizer, "model_max_length", None))
        known = [int(x) for x in limits if isinstance(x, int) and 0 < x < 10**8]
        self.context = min(known) if known else 2048
        self.eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        if pad is None:  # any id does: padded positions are masked, finished rows dropped
            pad = min(self.eos_ids) if self.eos_ids else 0
        self.pad_id = int(pad)

    @classmethod
    def load(
        cls,
        model_or_dir: str | Path,
        *,
        precision: Precision = "auto",
        threads: int | None = None,
        notify: Any = None,
    ) -> Generator:
        """Load a generative model by name (``default-chat``), from a local directory, or
        from a bundle that ``tuneforge train --task generate`` wrote.

        A bundle's base model is loaded by its reference and checked against the hash the
        bundle records (a different base is refused); a LoRA adapter is merged into a copy
        of the base in memory, so decoding costs what the base costs.

        Args:
            model_or_dir: A generative base name (``default-chat``; converted once on first
                use), a local Hugging Face causal-LM directory with a chat template, or a
                generative bundle directory.
            precision: ``fp32``, ``bf16`` (weights in bfloat16; needs fast bf16 hardware),
                or ``auto``: bf16 on a GPU that has it, fp32 on CPU (batch-1 decoding
                measured faster in fp32 there).
            threads: CPU threads (None: the CPUs this process may use that are free).
            notify: Receives one-off messages such as a first-use conversion (default:
                stderr).

        Raises:
            InputError: Unknown name, not a causal LM, unsafe files, no chat template,
                bf16 without hardware support, a bad precision; a classifier bundle; a
                bundle whose base model is missing or not the one it was trained on.
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"precision must be auto, fp32 or bf16 (got {precision!r})")
        kwargs = {} if notify is None else {"notify": notify}
        bundle = open_generative_bundle(model_or_dir)
        if bundle is not None:
            base = check_generative_base(bundle, **kwargs)
        else:
            base = resolve_generative_base(str(model_or_dir), **kwargs)
        device = pick_device()
        choice = apply_threads(threads) if device.type == "cpu" else None
        has_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_fast_bf16()
        if precision == "bf16" and not has_bf16:
            raise InputError(
                "bf16 was requested but this hardware has no fast bf16 (needs AVX-512 BF16/AMX "
                "on CPU, or a bf16-capable GPU); use precision auto or fp32"
            )
        use_bf16 = precision == "bf16" or (
            precision == "auto" and device.type == "cuda" and has_bf16
        )
        dtype = torch.bfloat16 if use_bf16 else torch.float32
        if bundle is not None:
            tuned, tuned_tokenizer = load_generative_bundle(bundle, base, dtype)
            tuned.to(device)
            tuned.eval()
            return cls(tuned, tuned_tokenizer, base, choice, bundle=bundle.path)
        tokenizer = AutoTokenizer.from_pretrained(base.path, trust_remote_code=False)
        if not getattr(tokenizer, "chat_template", None):
            raise InputError(
                f"model {base.name!r} has no chat template, so it cannot take a conversation; "
                "use an instruction-tuned (chat) model"
            )
        model: Any = AutoModelForCausalLM.from_pretrained(
            base.path, trust_remote_code=False, use_safetensors=True, dtype=dtype
        )
        model.to(device)
        model.eval()
        return cls(model, tokenizer, base, choice)

    # ------------------------------------------------------------------ public API

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        """Answer one conversation.

        Args:
            messages: The conversation so far, ``[{"role", "content"}, ...]``; the reply
                is the next assistant turn.
            max_tokens: Tokens to generate at most (None: 256, or fewer where the model's
                context ends first). Prompt plus ``max_tokens`` must fit the context.
            temperature: 0 for greedy decoding (deterministic), up to 2.
            top_p: Sample from the smallest set of tokens whose probability reaches this.
            stop: A string or up to 4 strings; generation ends before the first of them,
                which is not returned.
            seed: Makes sampling reproducible (same seed, same settings: same reply).

        Returns:
            The reply and why it ended.

        Raises:
            InputError: Bad messages or settings, or a prompt too long for the context.
        """
        for item in self.stream(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            seed=seed,
        ):
            if isinstance(item, Completion):
                return item
        raise AssertionError("stream ended without a completion")  # pragma: no cover

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Iterator[str | Completion]:
        """Answer one conversation, yielding text as it decodes, then the ``Completion``.

        The deltas join to the completion's text: a character split across tokens is
        yielded once whole, and text that could begin a stop string is held back until it
        is known not to. Arguments as for ``chat``; they are checked before the first
        yield.
        """
        settings = check_sampling(max_tokens, temperature, top_p, stop, seed)
        prompt = self._prompt_ids(validate_messages(messages))
        budget = self.check_room(len(prompt), settings.max_tokens)
        return self._stream([prompt], settings, budget)

    def chat_batch(
        self,
        conversations: Sequence[list[dict[str, str]]],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[Completion]:
        """Answer several conversations in one left-padded batch, in input order.

        Greedy replies equal ``chat``'s one at a time. With sampling and a ``seed``, each
        row samples from its own generator seeded with ``seed``, so a row's reply is the
        one ``chat`` gives with that seed. Arguments as for ``chat``; ``max_tokens``
        applies to each row and must fit the longest prompt's context.
        """
        settings = check_sampling(max_tokens, temperature, top_p, stop, seed)
        if not conversations:
            return []
        prompts = []
        for index, messages in enumerate(conversations):
            try:
                prompts.append(self._prompt_ids(validate_messages(messages)))
            except InputError as exc:
                raise InputError(f"conversation {index + 1}: {exc}") from None
        budget = self.check_room(max(len(p) for p in prompts), settings.max_tokens)
        replies = self._decode_rows(prompts, settings, budget)
        return [
            Completion(r.text, r.finish or "length", len(p), len(r.tokens))
            for r, p in zip(replies, prompts, strict=True)
        ]

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens of ``messages`` rendered with the chat template and the reply's header."""
        return len(self._prompt_ids(validate_messages(messages)))

    # ------------------------------------------------------------------ internals

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def check_room(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """Tokens a reply may have after a prompt of ``prompt_tokens``: ``max_tokens``, or
        256 (fewer where the context ends) when it is None.

        Raises:
            InputError: The prompt fills the context, or prompt plus ``max_tokens`` exceed it.
        """
        room = self.context - prompt_tokens
        if room < 1:
            raise InputError(
                f"the conversation is {prompt_tokens} tokens, and the model's context is "
                f"{self.context}: no room for a reply; shorten the conversation"
            )
        if max_tokens is None:
            return min(DEFAULT_MAX_TOKENS, room)
        if max_tokens > room:
            raise InputError(
                f"max_tokens {max_tokens} plus the conversation's {prompt_tokens} tokens exceed "
                f"the model's context of {self.context} tokens; use max_tokens <= {room}"
            )
        return max_tokens

    def _stream(
        self, prompts: list[list[int]], settings: Sampling, budget: int
    ) -> Iterator[str | Completion]:
        replies: list[_Reply] = []
        for _ in self._steps(prompts, settings, budget, replies):
            piece = replies[0].delta()
            if piece:
                yield piece
        reply = replies[0]
        piece = reply.delta()
        if piece:
            yield piece
        yield Completion(reply.text, reply.finish or "length", len(prompts[0]), len(reply.tokens))

    def _decode_rows(
        self, prompts: list[list[int]], settings: Sampling, budget: int
    ) -> list[_Reply]:
        replies: list[_Reply] = []
        for _ in self._steps(prompts, settings, budget, replies):
            pass
        return replies

    def _steps(
        self,
        prompts: list[list[int]],
        settings: Sampling,
        budget: int,
        replies: list[_Reply],
    ) -> Iterator[int]:
        """Decode all rows, one token per row per step; fills ``replies`` and yields the
        step number after each step (so a caller can stream between steps)."""
        import torch

        replies.extend(_Reply(self.tokenizer, settings.stop) for _ in prompts)
        generators: list[torch.Generator | None] = []
        for _ in prompts:
            if settings.temperature == 0:
                generators.append(None)
                continue
            g = torch.Generator()
            if settings.seed is None:
                g.seed()
            else:
                g.manual_seed(settings.seed)
            generators.append(g)
        width = max(len(p) for p in prompts)
        rows = len(prompts)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row's last token lines up
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        past: Any = None
        active = list(range(rows))  # rows still decoding, in batch order
        with torch.inference_mode():
            for step in range(budget):
                out = self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float().cpu()
                next_ids = []
                for slot, row in enumerate(active):
                    if replies[row].finish is not None:  # kept where the cache cannot drop it
                        next_ids.append(self.pad_id)
                        continue
                    token = _pick_next(
                        logits[slot], settings.temperature, settings.top_p, generators[row]
                    )
                    replies[row].add(token, token in self.eos_ids)
                    next_ids.append(token)
                yield step
                keep = [slot for slot, row in enumerate(active) if replies[row].finish is None]
                if not keep:
                    return
                if len(keep) < len(active) and hasattr(past, "batch_select_indices"):
                    # finished rows leave the batch: later steps compute only the others
                    index = torch.tensor(keep, dtype=torch.long, device=self.device)
                    past.batch_select_indices(index)
                    mask, positions = mask[index], positions[index]
                    active = [active[slot] for slot in keep]
                    next_ids = [next_ids[slot] for slot in keep]
                ids = torch.tensor(next_ids, dtype=torch.long, device=self.device)[:, None]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                positions = positions[:, -1:] + 1
        for reply in replies:
            if reply.finish is None:
                reply.end()
