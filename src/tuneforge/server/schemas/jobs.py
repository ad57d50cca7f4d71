"""Shapes of ``/v1/fine_tuning/jobs`` (OpenAI ``FineTuningJob``), with tuneforge extensions."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tuneforge.config import QUALITY_CHECKS, RANGE_KEYS, Setting
from tuneforge.jobs.spec import (
    OPENAI_HYPERPARAMETERS,
    hyperparameter_settings,
    method_option_settings,
    method_types,
)
from tuneforge.jobs.status import JobStatus

Auto = Literal["auto"]
# OpenAI's limits on a job's metadata.
METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
_KIND_ORDER = (bool, int, float, str, tuple, list)


def _field_type(s: Setting, *, openai: bool) -> Any:
    """The pydantic type of a setting: its members, ranges on the numbers (the API's own
    upper bound where the setting has one), None = not given (OpenAI's three take ``"auto"``
    instead). Numbers are finite: ``Infinity`` and ``NaN`` (which JSON parsers accept) are
    refused."""
    bounds = {k: s.meta[k] for k in RANGE_KEYS if k in s.meta}
    if "api_le" in s.meta:
        bounds["le"] = s.meta["api_le"]
    members: list[Any] = []
    if s.allows_auto or openai:
        members.append(Auto)
    for kind in sorted(s.kinds, key=_KIND_ORDER.index):
        if "choices" in s.meta and kind is str:
            members.append(Literal[tuple(s.meta["choices"])])
        elif kind is int:
            members.append(Annotated[int, Field(strict=True, **bounds)])
        elif kind is float:
            members.append(Annotated[float, Field(allow_inf_nan=False, **bounds)])
        elif kind in (tuple, list):
            if list[str] not in members:
                members.append(list[str])
        else:
            members.append(Annotated[kind, Field(strict=True)])
    if not openai:
        members.append(None)
    union: Any = Union[tuple(members)]  # noqa: UP007 - built at run time
    return Annotated[union, WrapValidator(_one_error(s, openai=openai))]


def _one_error(s: Setting, *, openai: bool) -> Any:
    """A validator that reports a bad value once, at the field (``param`` is
    ``hyperparameters.n_epochs``), with what the API accepts, instead of one error per
    member of the union."""
    api = replace(s, meta={**s.meta, "le": s.meta["api_le"]}) if "api_le" in s.meta else s
    accepted = api.requirement() + (" or 'auto'" if openai and not s.allows_auto else "")

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            # no context: the message is used as written (braces in ``shown`` stay)
            message = f"must be {accepted}, got {shown}"
            raise PydanticCustomError("invalid_setting", message) from None

    return validate


def _fields(table: dict[str, Setting]) -> dict[str, Any]:
    fields = {}
    for name, s in table.items():
        openai = name in OPENAI_HYPERPARAMETERS
        default = "auto" if openai else None
        fields[name] = (_field_type(s, openai=openai), Field(default, description=s.help))
    return fields


if TYPE_CHECKING:  # what type checkers see; the fields are built below, at run time

    class Hyperparameters(BaseModel): ...

    class MethodParams(BaseModel):
        hyperparameters: Hyperparameters | None

    class Method(BaseModel):
        type: str

else:
    Hyperparameters = create_model(
        "Hyperparameters",
        __config__=ConfigDict(extra="forbid"),
        __doc__="OpenAI's three hyperparameters (a number or ``\"auto\"``), then tuneforge's "
        "training settings by their config names (null: the default).",
        **_fields(hyperparameter_settings()),
    )
    MethodParams = create_model(
        "MethodParams",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Per-method settings (``method.<type>``): hyperparameters and the method's "
        "options.",
        hyperparameters=(Hyperparameters | None, None),
        **_fields(method_option_settings()),
    )
    Method = create_model(
        "Method",
        __config__=ConfigDict(extra="forbid"),
        __doc__="``supervised`` (OpenAI; = full fine-tuning) or a registered tuneforge method.",
        type=(Literal[tuple(method_types())], "supervised"),
        **{name: (MethodParams | None, None) for name in method_types()},
    )


class DataOptions(BaseModel):
    """How the job's files are read (tuneforge extension ``data``; the CLI's data options)."""

    model_config = ConfigDict(extra="forbid")

    text_column: str | None = Field(
        None, min_length=1, max_length=255, description="Column holding the text."
    )
    label_column: str | None = Field(
        None, min_length=1, max_length=255, description="Column holding the label(s)."
    )
    multi_label: bool = Field(False, description="Rows may carry several labels.")
    label_separator: str = Field(
        "|", min_length=1, max_length=8, description="Separator of labels in one CSV cell."
    )
    quality_checks: Literal[QUALITY_CHECKS] = Field(  # type: ignore[valid-type]
        "warn",
        description="Duplicates, leakage between splits and conflicting labels: 'warn' (job "
        "events), 'error' (the job fails before training) or 'off'.",
    )


class WandbOptions(BaseModel):
    """OpenAI's ``wandb`` integration settings (accepted; recorded, not contacted)."""

    model_config = ConfigDict(extra="allow")

    project: str = Field(..., min_length=1, max_length=255)
    name: str | None = Field(None, max_length=255)
    entity: str | None = Field(None, max_length=255)
    tags: list[str] | None = Field(None, max_length=50)


class TensorBoardOptions(BaseModel):
    """``tensorboard`` integration settings (none yet)."""

    model_config = ConfigDict(extra="forbid")


class Integration(BaseModel):
    """A metrics tracker: ``tensorboard`` (event files, offline) or OpenAI's ``wandb``
    (the server is offline: recorded with a warning, TensorBoard event files instead)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["tensorboard", "wandb"]
    tensorboard: TensorBoardOptions | None = None
    wandb: WandbOptions | None = None

    @model_validator(mode="after")
    def _settings_match_type(self) -> Integration:
        if self.type == "wandb" and self.wandb is None:
            raise ValueError("a wandb integration needs its settings: 'wandb': {'project': ...}")
        other = "tensorboard" if self.type == "wandb" else "wandb"
        if getattr(self, other) is not None:
            raise ValueError(f"'{other}' settings given for an integration of type {self.type!r}")
        return self


class JobCreate(BaseModel):
    """``POST /v1/fine_tuning/jobs``."""

    model: str = Field(..., min_length=1, max_length=255, description="A base model id.")
    training_file: str = Field(..., min_length=1, max_length=64)
    validation_file: str | None = Field(None, max_length=64)
    test_file: str | None = Field(
        None, max_length=64, description="Held-out test file (tuneforge extension)."
    )
    data: DataOptions | None = None
    hyperparameters: Hyperparameters | None = None
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]*$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = Field(
        None,
        max_length=METADATA_MAX_KEYS,
        description=f"Up to {METADATA_MAX_KEYS} key-value pairs: keys of at most "
        f"{METADATA_MAX_KEY_CHARS} characters, values of at most {METADATA_MAX_VALUE_CHARS}.",
    )
    method: Method | None = None
    integrations: list[Integration] | None = Field(None, max_length=5)

    @field_validator("metadata")
    @classmethod
    def _metadata_sizes(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        for key, value in (metadata or {}).items():
            problem = None
            if len(key) > METADATA_MAX_KEY_CHARS:
                problem = (
                    f"keys are at most {METADATA_MAX_KEY_CHARS} characters; "
                    f"{key[:20]!r}... has {len(key)}"
                )
            elif len(value) > METADATA_MAX_VALUE_CHARS:
                problem = (
                    f"values are at most {METADATA_MAX_VALUE_CHARS} characters; the value "
                    f"of {key!r} has {len(value)}"
                )
            if problem:  # no context: the message is used as written
                raise PydanticCustomError("metadata_too_long", problem)
        return metadata


class JobError(BaseModel):
    """Why a job failed."""

    code: str
    message: str
    param: str | None = None


class JobObject(BaseModel):
    """A fine-tuning job."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    test_file: str | None = None
    data: dict[str, Any] | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] = []
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    attempts: int = 0


class JobList(BaseModel):
    """A page of jobs, newest first."""

    object: Literal["list"] = "list"
    data: list[JobObject]
    has_more: bool


class JobEvent(BaseModel):
    """One event of a job's log."""

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class JobEventList(BaseModel):
    """A page of events, newest first."""

    object: Literal["list"] = "list"
    data: list[JobEvent]
    has_more: bool


class Checkpoint(BaseModel):
    """A checkpoint a job saved."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int


class CheckpointList(BaseModel):
    """A page of checkpoints, newest first."""

    object: Literal["list"] = "list"
    data: list[Checkpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
