"""The paper's validation split: a stratified 10% of the training set, drawn once per dataset and seed and kept.

scikit-learn draws it; the indices are kept on disk (split_cache_file), so no run after the first
imports scikit-learn for it. Nothing here imports torch: a sweep draws its runs' splits before they
start (sweep_plan.draw_splits).
"""
import hashlib
import os

import numpy as np

from .protocol import VALIDATION_FRACTION, VALIDATION_SPLIT_SEED
from .runs import atomic_write
from .seeds import make_complex

__all__ = ['SPLIT_CACHE_ENV', 'SPLIT_FORMAT', 'draw_split', 'split_cache_file']

SPLIT_CACHE_ENV = 'REVISITING_BN_CACHE'  # where splits are kept (default: $XDG_CACHE_HOME or ~/.cache, /revisiting-bn)
SPLIT_FORMAT = 'revisiting-bn-split-v1'


def draw_split(labels, seed=VALIDATION_SPLIT_SEED):
    """(training indices, validation indices) of ``labels`` (int64 NumPy arrays): the split drawn with ``seed``, or
    the one kept from an earlier draw (split_cache_file).

    As in the original, the indices keep train_test_split's (shuffled) order: the training
    subset is indexed in that order, which the epoch's permutation then reorders.
    """
    labels = np.asarray(labels)
    path = split_cache_file(labels, seed)
    try:
        with np.load(path) as kept:
            return kept['train'], kept['validation']
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from sklearn.model_selection import train_test_split
    # random_state=make_complex(0) draws exactly what the original draws from NumPy's global
    # generator after np.random.seed(make_complex(0)), without touching that generator.
    train_index, validation_index = train_test_split(
        np.arange(len(labels)), test_size=VALIDATION_FRACTION, stratify=labels,
        random_state=make_complex(seed))
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, train=train_index, validation=validation_index))
    except OSError:  # a cache that cannot be written: the split is drawn again next time
        pass
    return train_index, validation_index


def split_cache_file(labels, seed):
    """Where the split of ``labels`` drawn with ``seed`` is kept: named by a hash of the labels, the seed, the
    fraction and the format, so another dataset, seed or version never reads it."""
    digest = hashlib.sha256(f'{SPLIT_FORMAT} {seed} {VALIDATION_FRACTION} {labels.dtype}'.encode())
    digest.update(np.ascontiguousarray(labels).tobytes())
    folder = os.environ.get(SPLIT_CACHE_ENV) or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'), 'revisiting-bn')
    return os.path.join(folder, 'splits', f'split-{digest.hexdigest()[:24]}.npz')
