"""Shapes of ``/v1/fine_tuning/jobs`` (OpenAI ``FineTuningJob``), with tuneforge extensions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Auto = Literal["auto"]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Hyperparameters(BaseModel):
    """OpenAI's three hyperparameters, each a number or ``"auto"``, plus tuneforge's own."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Auto | PositiveInt | PositiveFloat = Field(
        "auto", description="Epochs (a fraction is allowed)."
    )
    batch_size: Auto | PositiveInt = "auto"
    learning_rate_multiplier: Auto | PositiveFloat = "auto"
    # tuneforge extensions
    learning_rate: float | None = Field(None, gt=0, le=1, description="Absolute peak LR.")
    max_length: int | None = Field(None, ge=8, le=8192, description="Longest input in tokens.")
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    patience: int | None = Field(None, ge=0, description="Early-stopping patience (evals).")
    eval_every: int | None = Field(None, ge=1, description="Validate every N steps.")
    checkpoint_every: int | None = Field(None, ge=1, description="Checkpoint every N steps.")
    precision: Literal["auto", "fp32", "bf16"] | None = None
    class_weights: bool | None = None
    num_threads: int | None = Field(None, ge=1, le=256)


class MethodParams(BaseModel):
    """Per-method settings (``method.<type>``)."""

    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = None
    lora_r: int | None = Field(None, ge=1, le=1024)
    lora_alpha: int | None = Field(None, ge=1, le=4096)
    lora_dropout: float | None = Field(None, ge=0, lt=1)
    target_modules: list[str] | None = None


class Method(BaseModel):
    """``supervised`` (OpenAI; = full fine-tuning) or a tuneforge method."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "full", "head", "lora", "ia3"] = "supervised"
    supervised: MethodParams | None = None
    full: MethodParams | None = None
    head: MethodParams | None = None
    lora: MethodParams | None = None
    ia3: MethodParams | None = None


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
    metadata: dict[str, str] | None = Field(None, max_length=16)
    method: Method | None = None
    integrations: list[Integration] | None = Field(None, max_length=5)


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
    status: Literal[
        "validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"
    ]
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
