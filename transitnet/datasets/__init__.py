"""Samples for training: the line vocabulary, windows and splits (torch, no models)."""

from transitnet.datasets.vocab import UNKNOWN_KEY, UNKNOWN_ROW, LineVocabulary, build_row_map

__all__ = ["UNKNOWN_KEY", "UNKNOWN_ROW", "LineVocabulary", "build_row_map"]
