"""Checks of a run config that need the registries above ``config.py``.

``config.py`` validates types and ranges on its own; which methods exist and which metrics
can select a checkpoint are known only to ``methods/`` and ``evaluation/``, which sit above
it, so the edges (the CLI, the job API, the recipe) call ``check_run_config`` before they
read any data, and ``check_schedule`` once they know the training rows (a batch no larger
than the data, a run no longer than a server allows).
"""

from __future__ import annotations

from tuneforge.config import RunConfig, SettingError
from tuneforge.errors import InputError
from tuneforge.evaluation.metrics import selection_metric_names
from tuneforge.methods import get_method, method_names
from tuneforge.methods.targets import base_module_names, check_target_modules
from tuneforge.models.registry import resolve_base_model
from tuneforge.training.auto import Schedule, resolve_schedule


def check_run_config(config: RunConfig) -> RunConfig:
    """Return ``config`` if its method and selection metric exist.

    Raises:
        InputError: Unknown method or selection metric (the message lists the known ones),
            a metric the task does not have (``log_loss`` of a multi-label model), or a
            learning rate above 1 once multiplied (a ``SettingError`` naming the setting).
    """
    methods = method_names()
    if config.method.name not in methods:
        raise InputError(
            f"method.name: unknown method {config.method.name!r}; "
            f"choose one of: {', '.join(methods)}"
        )
    metric = config.train.selection_metric
    metrics = selection_metric_names()
    if metric not in metrics:
        raise SettingError(
            "train.selection_metric",
            f"train.selection_metric: unknown metric {metric!r}; choose one of: "
            f"{', '.join(metrics)}",
        )
    if config.data.multi_label and metric == "log_loss":
        raise SettingError(
            "train.selection_metric",
            "train.selection_metric: log_loss is not computed for multi-label models; "
            "choose macro_f1, micro_f1, weighted_f1 or subset_accuracy",
        )
    t = config.train
    if t.learning_rate != "auto" and t.learning_rate * t.learning_rate_multiplier > 1:
        raise SettingError(
            "train.learning_rate_multiplier",
            f"train.learning_rate_multiplier: {t.learning_rate_multiplier} x learning_rate "
            f"{t.learning_rate} is above 1; lower one of them",
        )
    return config


def check_schedule(config: RunConfig, n_train: int, max_steps: int | None = None) -> Schedule:
    """The run's schedule on ``n_train`` training rows, if the settings fit the data.

    Args:
        config: The run config.
        n_train: Rows of the training split (after validation and test are carved).
        max_steps: The most optimizer steps allowed (a server's cap), or None.

    Raises:
        SettingError: A batch larger than the training rows (``train.batch_size``), or a run
            longer than ``max_steps`` (``train.epochs``).
    """
    t = config.train
    if t.batch_size != "auto" and t.batch_size > n_train:
        raise SettingError(
            "train.batch_size",
            f"train.batch_size {t.batch_size} is larger than the {n_train} training rows "
            f"(after the validation and test splits); choose at most {n_train}",
        )
    schedule = resolve_schedule(n_train, t.epochs, t.batch_size, t.gradient_accumulation)
    if max_steps is not None and schedule.total_steps > max_steps:
        epochs = f"{schedule.epochs:g}"
        raise SettingError(
            "train.epochs",
            f"train.epochs: the run would take {schedule.total_steps} optimizer steps "
            f"({epochs} epoch(s) of {schedule.steps_per_epoch} steps: {n_train} training rows "
            f"at batch size {schedule.batch_size}, gradient accumulation "
            f"{t.gradient_accumulation}), over the limit of {max_steps} steps",
        )
    return schedule


def check_method_options(config: RunConfig) -> None:
    """Raise unless the method's options fit the base model: every ``target_modules`` name
    of an adapter method is a module of the model (built without its weights).

    Raises:
        SettingError: Unknown target modules (``method.target_modules``).
        InputError: The base model cannot be resolved.
    """
    targets = config.method.target_modules
    if not targets or not get_method(config.method.name).uses_target_modules:
        return
    base = resolve_base_model(config.model.name)
    check_target_modules(base_module_names(base.path), targets)
