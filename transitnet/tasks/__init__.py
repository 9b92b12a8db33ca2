"""LightningModules (the only ones in the package)."""

from transitnet.tasks.classification import ClassificationTask
from transitnet.tasks.forecasting import ForecastingTask

__all__ = ["ClassificationTask", "ForecastingTask"]
