"""LightningModules (the only ones in the package)."""

from transitnet.tasks.forecasting import ForecastingTask

__all__ = ["ForecastingTask"]
