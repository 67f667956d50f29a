"""Local training and evaluation of a node's adapter."""

from solora_node.train.evaluate import evaluate, mean_loss
from solora_node.train.settings import TrainSettings
from solora_node.train.trainer import LocalTrainer, TrainStateError

__all__ = ["LocalTrainer", "TrainSettings", "TrainStateError", "evaluate", "mean_loss"]
