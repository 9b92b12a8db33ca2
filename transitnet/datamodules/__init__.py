"""LightningDataModules: the store → batches."""

from transitnet.datamodules.classification import RouteClassDataModule
from transitnet.datamodules.transit import TransitDataModule

__all__ = ["RouteClassDataModule", "TransitDataModule"]
