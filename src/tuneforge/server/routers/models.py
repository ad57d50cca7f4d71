"""``/v1/models`` (OpenAI-compatible) and ``/v1/aliases`` (promote, rollback)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from tuneforge.server.deps import Admin, Reader, State, Trainer
from tuneforge.server.schemas.models import (
    AliasList,
    AliasObject,
    AliasSet,
    ModelDeleted,
    ModelList,
    ModelObject,
)
from tuneforge.server.services import models as service

router = APIRouter(tags=["models"])
AliasName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


@router.get("/v1/models", response_model=ModelList)
def list_models(state: State, principal: Reader) -> dict:
    """Base models and the project's fine-tuned models."""
    with state.sessions() as session:
        return {"object": "list", "data": service.list_models(state, session, principal.project)}


@router.get("/v1/models/{model:path}", response_model=ModelObject)
def retrieve_model(state: State, principal: Reader, model: str) -> dict:
    """A model by id (fine-tuned ids contain ':')."""
    with state.sessions() as session:
        return service.retrieve_model(state, session, principal.project, model)


@router.delete("/v1/models/{model:path}", response_model=ModelDeleted)
def delete_model(state: State, principal: Trainer, model: str) -> dict:
    """Delete a fine-tuned model and its bundle."""
    with state.sessions() as session:
        service.delete_model(state, session, principal.project, model)
    return {"id": model, "object": "model", "deleted": True}


@router.get("/v1/aliases", response_model=AliasList, tags=["aliases"])
def list_aliases(state: State, principal: Reader) -> dict:
    """The project's aliases."""
    with state.sessions() as session:
        return {"object": "list", "data": service.list_aliases(session, principal.project)}


@router.get("/v1/aliases/{name}", response_model=AliasObject, tags=["aliases"])
def retrieve_alias(state: State, principal: Reader, name: AliasName) -> dict:
    """An alias and its history."""
    with state.sessions() as session:
        return service.alias_object(session, principal.project, name)


@router.put("/v1/aliases/{name}", response_model=AliasObject, tags=["aliases"])
def promote_alias(state: State, principal: Admin, name: AliasName, body: AliasSet) -> dict:
    """Point an alias at a fine-tuned model (promote)."""
    with state.sessions() as session:
        alias = service.promote(session, principal.project, name, body.model)
    state.resolved.clear()  # the alias names another model from the next request on
    return alias


@router.post("/v1/aliases/{name}/rollback", response_model=AliasObject, tags=["aliases"])
def rollback_alias(state: State, principal: Admin, name: AliasName) -> dict:
    """Point an alias back at its previous model."""
    with state.sessions() as session:
        alias = service.rollback(session, principal.project, name)
    state.resolved.clear()
    return alias
