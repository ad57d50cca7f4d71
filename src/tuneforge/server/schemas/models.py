"""Shapes of ``/v1/models`` and of tuneforge's aliases."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelObject(BaseModel):
    """A base model (fine-tunable) or a fine-tuned classifier."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    base_model: str | None = None
    job_id: str | None = None
    labels: list[str] | None = None
    parent: str | None = None  # a kept checkpoint's fine-tuned model
    step_number: int | None = None  # a kept checkpoint's step


class ModelList(BaseModel):
    """Every model the project can use."""

    object: Literal["list"] = "list"
    data: list[ModelObject]


class ModelDeleted(BaseModel):
    """The answer to a delete."""

    id: str
    object: Literal["model"] = "model"
    deleted: bool


class AliasSet(BaseModel):
    """Point an alias at a model (promote)."""

    model: str = Field(..., min_length=1, max_length=255)


class AliasObject(BaseModel):
    """An alias, the model it names now, and what it named before (newest first)."""

    name: str
    object: Literal["alias"] = "alias"
    model: str
    updated_at: int
    history: list[str]


class AliasList(BaseModel):
    """Every alias of the project."""

    object: Literal["list"] = "list"
    data: list[AliasObject]
