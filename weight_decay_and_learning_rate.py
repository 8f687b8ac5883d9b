"""The optimizer: parameter groups for the paper's learning-rate reduction on BN scales, SGD and its schedule (revisiting_bn.weight_decay_and_learning_rate)."""
from revisiting_bn.weight_decay_and_learning_rate import *  # noqa: F401,F403
from revisiting_bn.weight_decay_and_learning_rate import __all__  # noqa: F401
