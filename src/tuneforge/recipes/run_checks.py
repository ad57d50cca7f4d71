"""Checks of a run config that need the registries above ``config.py``.

``config.py`` validates types and ranges on its own; which methods exist and which metrics
can select a checkpoint are known only to ``methods/`` and ``evaluation/``, which sit above
it, so the edges (the CLI, the job API, the recipe) call ``check_run_config`` before they
read any data.
"""

from __future__ import annotations

from tuneforge.config import RunConfig
from tuneforge.errors import InputError
from tuneforge.evaluation.metrics import selection_metric_names
from tuneforge.methods import method_names


def check_run_config(config: RunConfig) -> RunConfig:
    """Return ``config`` if its method and selection metric exist.

    Raises:
        InputError: Unknown method or selection metric (the message lists the known ones),
            or a metric the task does not have (``log_loss`` of a multi-label model).
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
        raise InputError(
            f"train.selection_metric: unknown metric {metric!r}; choose one of: "
            f"{', '.join(metrics)}"
        )
    if config.data.multi_label and metric == "log_loss":
        raise InputError(
            "train.selection_metric: log_loss is not computed for multi-label models; "
            "choose macro_f1, micro_f1, weighted_f1 or subset_accuracy"
        )
    return config
