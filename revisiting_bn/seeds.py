"""Seeding: simple integer seeds made complex with MD5, then every RNG seeded from them.

Small integers such as 1, 2, 3 have few set bits; the paper hashes them first so
that each trial's generators start from a well-mixed 32-bit state. Seed 0 is
reserved for the validation split; trials use seeds 1..15.
"""
import hashlib
import os
import random

__all__ = ['make_complex', 'make_deterministic']


def make_complex(simple_seed, verbose=False):
    """The last 32 bits (8 hex digits) of MD5(str(simple_seed)), as an integer.

    The values for 0..88265 are all different.
    """
    complex_seed = int(hashlib.md5(str(simple_seed).encode('utf-8')).hexdigest()[-8:], 16)
    if verbose:
        print(f'Original seed: {simple_seed}, Complex seed: {complex_seed}, '
              f'Binary value: {bin(complex_seed)[2:].zfill(32)}')
    return complex_seed


def make_deterministic(seed):
    """Seed Python, NumPy and torch (CPU and all CUDA devices) from ``make_complex(seed)``.

    Also sets PYTHONHASHSEED (inherited by child processes) and makes cuDNN pick
    deterministic algorithms. Returns the complex seed.
    """
    import numpy as np  # here, so that make_complex needs neither (a sweep draws its splits without torch)
    import torch
    complex_seed = make_complex(seed)
    os.environ['PYTHONHASHSEED'] = str(complex_seed)
    random.seed(complex_seed)
    np.random.seed(complex_seed)
    torch.manual_seed(complex_seed)
    torch.cuda.manual_seed_all(complex_seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return complex_seed
