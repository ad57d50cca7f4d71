"""``/v1/chat/completions`` (OpenAI-compatible, classifier models) and ``/v1/classify``."""

from __future__ import annotations

from fastapi import APIRouter

from tuneforge.server.deps import Inferrer, State
from tuneforge.server.schemas.inference import (
    ChatCompletion,
    ChatRequest,
    ClassifyRequest,
    ClassifyResponse,
)
from tuneforge.server.services import inference as service

router = APIRouter(tags=["inference"])


@router.post("/v1/chat/completions", response_model=ChatCompletion)
async def chat_completions(state: State, principal: Inferrer, body: ChatRequest) -> dict:
    """Classify the last user message with a fine-tuned model; the reply is the label."""
    return await service.chat_completion(state, principal.project, body)


@router.post("/v1/classify", response_model=ClassifyResponse)
async def classify(state: State, principal: Inferrer, body: ClassifyRequest) -> dict:
    """Labels and scores for one text or a list of texts."""
    return await service.classify(
        state, principal.project, body.model, body.input, body.top_k, body.threshold
    )
