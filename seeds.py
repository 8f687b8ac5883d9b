"""Seeding: simple integer seeds made complex with MD5, then every RNG seeded from them (revisiting_bn.seeds)."""
from revisiting_bn.seeds import *  # noqa: F401,F403
from revisiting_bn.seeds import __all__  # noqa: F401
