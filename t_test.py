"""Statistical significance as in the paper: a one-sided paired t-test over seeds.

Runs with the same seed share the validation split, the initial weights' RNG
stream and the data order, so the proposed and baseline results are paired by
seed and the test is on their per-seed differences.
"""
import numpy as np
from scipy import stats

__all__ = ['evaluate']


def _as_vector(values, name):
    if hasattr(values, 'detach'):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be a sequence of numbers') from None
    if array.ndim != 1:
        raise ValueError(f'{name} must be one-dimensional, got shape {array.shape}')
    if not np.all(np.isfinite(array)):
        raise ValueError(f'{name} contains non-finite values (NaN or inf) at positions '
                         f'{np.flatnonzero(~np.isfinite(array)).tolist()}')
    return array


def evaluate(d1, d2):
    """p-value of the one-sided paired t-test that ``d1`` is greater than ``d2``.

    ``d1[i]`` and ``d2[i]`` must come from the same seed. Accepts lists, NumPy
    arrays and torch tensors. The proposed method is significantly better than
    the baseline when the p-value is <= 0.05.
    """
    a, b = _as_vector(d1, 'd1'), _as_vector(d2, 'd2')
    if a.shape != b.shape:
        raise ValueError(f'd1 and d2 must be paired (same length), got {a.size} and {b.size} values')
    if a.size < 2:
        raise ValueError(f'the paired t-test needs at least 2 pairs, got {a.size}')
    if np.all(a == b):
        raise ValueError('d1 and d2 are identical: every paired difference is 0, '
                         'so the t-test is undefined')
    return float(stats.ttest_rel(a, b, alternative='greater').pvalue)
