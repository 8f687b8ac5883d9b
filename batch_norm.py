"""Normalisation layers whose scale (gamma) starts at a chosen constant (BN, MABN), and the registry of their kinds (revisiting_bn.batch_norm)."""
from revisiting_bn.batch_norm import *  # noqa: F401,F403
from revisiting_bn.batch_norm import __all__  # noqa: F401
