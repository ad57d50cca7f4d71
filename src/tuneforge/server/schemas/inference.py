"""Shapes of ``/v1/chat/completions`` (classification) and ``/v1/classify``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_INPUTS = 2048
MAX_CHARS = 100_000


class ContentPart(BaseModel):
    """A part of a message's content; only text parts are read."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``; sampling options are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1, max_length=255)
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=1024)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    n: int | None = Field(1, ge=1, le=1)
    stream: bool | None = False


class TopLogprob(BaseModel):
    """An alternative label and its log-probability."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """The chosen label with its alternatives."""

    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """Log-probabilities of the answer (one "token": the label)."""

    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    """The answer: the label."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class Choice(BaseModel):
    """The one choice."""

    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop"] = "stop"


class Usage(BaseModel):
    """Token counts (the prompt as the classifier tokenised it)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """A chat completion whose content is the predicted label."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class ClassifyRequest(BaseModel):
    """``POST /v1/classify``."""

    model: str = Field(..., min_length=1, max_length=255, description="Model id or alias.")
    input: str | list[str] = Field(..., description=f"A text or up to {MAX_INPUTS} texts.")
    top_k: int | None = Field(None, ge=1, le=1000, description="Also return the k best labels.")
    threshold: float | None = Field(
        None, ge=0, le=1, description="Abstain (label null) below this probability."
    )


class LabelScore(BaseModel):
    """A label and its probability."""

    label: str
    score: float


class Classification(BaseModel):
    """The answer for one input."""

    index: int
    label: str | None
    score: float
    labels: list[str]
    top_k: list[LabelScore] | None = None


class ClassifyResponse(BaseModel):
    """Labels for every input, in order."""

    object: Literal["list"] = "list"
    model: str
    data: list[Classification]
    usage: dict[str, Any]
