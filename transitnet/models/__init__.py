"""Plain ``nn.Module`` networks (no Lightning): growable embeddings, encoders and heads."""

from transitnet.models.classifier import MASKED_LOGIT, ExtensibleClassifier
from transitnet.models.embedding import LineEmbedding, SplitRows, dropout_ids
from transitnet.models.encoder import TrajectoryEncoder
from transitnet.models.forecaster import ForecastNet, add_lines
from transitnet.models.heads import BiasCorrection, QuantileForecastHead, fit_bic
from transitnet.models.losses import pinball_loss
from transitnet.models.migrate import compute_init_rows, migrate_optimizer_state, migrate_rows
from transitnet.models.prototype import PrototypeHead
from transitnet.models.routed import RoutedForecastNet, fork_network

__all__ = [
    "MASKED_LOGIT",
    "BiasCorrection",
    "ExtensibleClassifier",
    "ForecastNet",
    "LineEmbedding",
    "PrototypeHead",
    "QuantileForecastHead",
    "RoutedForecastNet",
    "SplitRows",
    "TrajectoryEncoder",
    "add_lines",
    "compute_init_rows",
    "dropout_ids",
    "fit_bic",
    "fork_network",
    "migrate_optimizer_state",
    "migrate_rows",
    "pinball_loss",
]
