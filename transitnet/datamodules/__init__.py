"""LightningDataModules: the store → batches."""

from transitnet.datamodules.transit import TransitDataModule

__all__ = ["TransitDataModule"]
