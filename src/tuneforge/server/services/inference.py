"""Classification for ``/v1/classify`` and ``/v1/chat/completions``."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from fastapi.concurrency import run_in_threadpool

from tuneforge.inference.batching import QueueFull, RequestTimeout
from tuneforge.inference.predictor import Prediction
from tuneforge.jobs.ids import new_id
from tuneforge.server.errors import APIError
from tuneforge.server.model_cache import LoadedModel, ModelUnavailable
from tuneforge.server.schemas.inference import MAX_CHARS, MAX_INPUTS, ChatMessage, ChatRequest
from tuneforge.server.services.models import bundle_for
from tuneforge.server.state import AppState
from tuneforge.server.text_checks import (
    SURROGATE,
    check_no_lone_surrogates,
    invalid_text_error,
)

RESOLVE_TTL = 1.0  # seconds a (project, model name) -> model id lookup is reused

log = logging.getLogger("tuneforge.server")


def _load(state: AppState, project: str, model: str) -> LoadedModel:
    """Load the model (in a worker thread); 503 ``model_unavailable`` when its bundle does
    not load (the cause is logged server-side, never sent)."""
    with state.store.read() as session:
        model_id, bundle = bundle_for(state, session, project, model)
    try:
        return state.models.get(model_id, bundle)
    except ModelUnavailable as exc:
        raise APIError(
            503,
            f"The model '{model}' could not be loaded; the failure is logged on the server. "
            "Retry later, or ask the server's operators to check or re-import the model.",
            code="model_unavailable",
            param="model",
            headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
        ) from None


async def _resolve(state: AppState, project: str, model: str) -> LoadedModel:
    """The loaded model: looked up in the event loop, loaded in a thread only when needed.

    Which id a name (or alias) means is remembered for ``RESOLVE_TTL`` seconds, so a busy
    model costs no database read per request; a deleted model or a moved alias is seen
    within that time (at once when the change goes through this server).
    """
    check_no_lone_surrogates(model, "model")  # the name goes to the database
    key = (project, model)
    hit = state.resolved.get(key)
    if hit is not None and hit[1] > time.monotonic():
        model_id = hit[0]
    else:
        with state.store.read() as session:
            model_id, _bundle = bundle_for(state, session, project, model)
        state.resolved[key] = (model_id, time.monotonic() + RESOLVE_TTL)
    loaded = state.models.peek(model_id)
    if loaded is not None:
        return loaded
    return await run_in_threadpool(_load, state, project, model)


async def predict(
    state: AppState,
    project: str,
    model: str,
    texts: list[str],
    top_k: int | None,
    threshold: float | None,
) -> tuple[LoadedModel, list[Prediction], int]:
    """Resolve the model (loading it off the event loop), then classify through its
    micro-batcher; 503 when its queue is full, 504 past the request timeout, 500 (logged, no
    details in the answer) when the model fails on these texts.

    Returns:
        The model, one prediction per text, and the number of tokens the texts took.
    """
    loaded = await _resolve(state, project, model)
    try:
        rows = await loaded.batcher.submit(texts, timeout=state.settings.request_timeout_seconds)
    except QueueFull as exc:
        raise APIError(
            503,
            f"Model {loaded.model_id} is overloaded ({loaded.batcher.queued} texts waiting); "
            "retry later.",
            code="overloaded",
            headers={"Retry-After": str(max(1, round(exc.retry_after)))},
        ) from None
    except RequestTimeout:
        raise APIError(
            504,
            f"No answer within {state.settings.request_timeout_seconds:g} s; retry later or "
            "send fewer texts.",
            code="timeout",
        ) from None
    except Exception:  # the batcher isolates it: only this request failed
        log.exception("inference failed for model %s", loaded.model_id)
        raise APIError(
            500,
            f"Model {loaded.model_id} could not classify this request (the server log has the "
            "details); other requests are not affected.",
            code="inference_error",
        ) from None
    state.metrics.predictions.inc(len(texts))
    tokens = int(rows[:, -1].sum())
    probs = rows[:, :-1]
    return loaded, loaded.predictor.decide(probs, top_k=top_k, threshold=threshold), tokens


def _check_texts(texts: list[str], params: list[str]) -> None:
    """400 unless each text is valid Unicode of at most ``MAX_CHARS`` characters;
    ``params[i]`` names text ``i`` in the request."""
    for text, param in zip(texts, params, strict=True):
        if len(text) > MAX_CHARS:
            raise APIError(
                400,
                f"'{param}' is longer than {MAX_CHARS} characters.",
                code="input_too_long",
                param=param,
            )
        bad = SURROGATE.search(text)
        if bad is not None:
            raise invalid_text_error(param, bad.group(), bad.start())


async def classify(
    state: AppState,
    project: str,
    model: str,
    inputs: str | list[str],
    top_k: int | None,
    threshold: float | None,
) -> dict[str, Any]:
    """Labels and scores for every input."""
    if isinstance(inputs, str):
        texts, params = [inputs], ["input"]
    else:
        texts, params = list(inputs), [f"input.{i}" for i in range(len(inputs))]
    if not texts:
        raise APIError(400, "No input to classify.", code="empty_input", param="input")
    if len(texts) > MAX_INPUTS:
        raise APIError(
            400,
            f"At most {MAX_INPUTS} inputs per request; send the others in further requests.",
            code="too_many_inputs",
            param="input",
        )
    _check_texts(texts, params)
    loaded, predictions, tokens = await predict(state, project, model, texts, top_k, threshold)
    model_id = loaded.model_id
    return {
        "object": "list",
        "model": model_id,
        "data": [
            {
                "index": i,
                "label": p.label,
                "score": p.score,
                "labels": p.labels,
                "top_k": [{"label": lab, "score": s} for lab, s in p.top_k] if top_k else None,
            }
            for i, p in enumerate(predictions)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _text_of(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text or "" for part in message.content or [] if part.type == "text")


async def chat_completion(state: AppState, project: str, body: ChatRequest) -> dict[str, Any]:
    """Classify the last user message; the assistant's content is the label."""
    if body.stream:
        raise APIError(
            400,
            "Streaming is not supported for classifier models; omit 'stream'.",
            code="unsupported",
            param="stream",
        )
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users:
        raise APIError(
            400,
            "The request has no user message to classify.",
            code="no_user_message",
            param="messages",
        )
    index = users[-1]
    param = f"messages.{index}.content"
    text = _text_of(body.messages[index])
    if not text.strip():
        raise APIError(
            400,
            f"The last user message (messages[{index}]) has no text to classify: give it "
            "text content (a string or parts of type 'text'); other parts (images, audio) "
            "are not read.",
            code="empty_input",
            param=param,
        )
    _check_texts([text], [param])
    top = body.top_logprobs or 0
    loaded, (prediction,), prompt_tokens = await predict(
        state, project, body.model, [text], max(top, 1), None
    )
    model_id = loaded.model_id
    label = prediction.label if prediction.label is not None else ""
    logprobs = None
    if body.logprobs:

        def entry(token: str, p: float) -> dict[str, Any]:
            return {
                "token": token,
                "logprob": math.log(max(p, 1e-45)),
                "bytes": list(token.encode("utf-8")),
            }

        chosen = entry(label, prediction.score)
        chosen["top_logprobs"] = [entry(lab, p) for lab, p in prediction.top_k[:top]]
        logprobs = {"content": [chosen], "refusal": None}
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": label, "refusal": None},
                "logprobs": logprobs,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 1,
            "total_tokens": prompt_tokens + 1,
        },
        "system_fingerprint": None,
    }
