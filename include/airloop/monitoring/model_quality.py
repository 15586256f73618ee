"""Model quality on the logged predictions whose label has come back, against the champion's holdout.

scikit-learn and numpy are imported inside the function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airloop.decisions import metric_drop
from airloop.monitoring.results import LABEL, PREDICTION

if TYPE_CHECKING:
    import pandas as pd

    from airloop.spec import ModelSpec

__all__ = ["quality"]


def quality(spec: ModelSpec, labelled: pd.DataFrame, holdout_metrics: dict[str, float]) -> dict[str, Any]:
    """Metrics of the champion's predictions on the labelled rows, and the drop vs. its holdout.

    Measured numbers only: whether the drop is a drift signal is the verdict's to say
    (:meth:`~airloop.monitoring.evidently_run.DriftRun.verdict`;
    :func:`~airloop.monitoring.check.assess` adds it to the dict).
    """
    import numpy as np
    from sklearn import metrics as m

    y = labelled[LABEL].to_numpy(dtype="float64")
    p = labelled[PREDICTION].to_numpy(dtype="float64")
    values: dict[str, float] = {}
    if len(y):
        if spec.task == "classification":
            y = (y >= 0.5).astype(int)
            if len(np.unique(y)) == 2:
                values["roc_auc"] = float(m.roc_auc_score(y, p))
                values["pr_auc"] = float(m.average_precision_score(y, p))
            values["log_loss"] = float(m.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
            values["brier"] = float(m.brier_score_loss(y, p))
            values["accuracy"] = float(m.accuracy_score(y, p >= 0.5))
            values["positive_rate"] = float(y.mean())
        else:
            values["rmse"] = float(m.root_mean_squared_error(y, p))
            values["mae"] = float(m.mean_absolute_error(y, p))
            if len(y) > 1:
                values["r2"] = float(m.r2_score(y, p))
    metric = spec.promotion.metric
    value, champion = values.get(metric), holdout_metrics.get(metric)
    return {
        "labelled_rows": len(y),
        "metric": metric,
        "value": value,
        "champion_value": champion,
        "drop": metric_drop(spec.promotion, metric, value, champion),
        "metrics": values,
        "champion_metrics": {k: v for k, v in holdout_metrics.items() if k in values},
    }
