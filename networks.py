"""The networks of the paper's experiments, chosen by name, with their normalisation layers and initialisation (revisiting_bn.networks)."""
from revisiting_bn.networks import *  # noqa: F401,F403
from revisiting_bn.networks import __all__  # noqa: F401
