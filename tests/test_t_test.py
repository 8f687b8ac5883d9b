import math

import numpy as np
import pytest
import torch
from scipy import stats

from t_test import evaluate

NEW = [91.7, 93.4, 92.2, 90.0, 91.9]
BASE = [91.0, 92.7, 92.2, 90.1, 91.5]


def one_sided_p_by_hand(a, b):
    d = np.asarray(a, float) - np.asarray(b, float)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    return stats.t.sf(t, df=len(d) - 1)


def test_readme_example_matches_the_paired_t_formula():
    p = evaluate(np.array(NEW), np.array(BASE))
    assert p == pytest.approx(one_sided_p_by_hand(NEW, BASE), rel=1e-12)
    assert p == pytest.approx(0.0573692, abs=1e-6)  # not significant at 0.05


def test_two_sided_and_less_alternatives():
    assert evaluate(NEW, BASE, 'two-sided') == pytest.approx(2 * evaluate(NEW, BASE), rel=1e-12)
    assert evaluate(NEW, BASE, 'less') == pytest.approx(1 - evaluate(NEW, BASE), rel=1e-12)
    assert evaluate(BASE, NEW, 'two-sided') == pytest.approx(evaluate(NEW, BASE, 'two-sided'), rel=1e-12)
    with pytest.raises(ValueError, match='alternative must be one of'):
        evaluate(NEW, BASE, 'bigger')


def test_direction_and_input_types():
    better = [x + 1 + 0.1 * i for i, x in enumerate(BASE)]
    assert evaluate(better, BASE) < 0.001
    assert evaluate(BASE, better) > 0.999
    expected = evaluate(NEW, BASE)
    as_float64 = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    assert evaluate(as_float64(NEW), as_float64(BASE)) == pytest.approx(expected)
    assert evaluate(tuple(NEW), np.array(BASE)) == pytest.approx(expected)
    assert evaluate(torch.tensor(NEW), torch.tensor(BASE)) == pytest.approx(expected, rel=1e-4)  # float32


@pytest.mark.parametrize('d1, d2, message', [
    ([1, 2, 3], [1, 2], 'same length'),
    ([1], [2], 'at least 2 pairs'),
    ([], [], 'at least 2 pairs'),
    ([1, float('nan')], [1, 2], 'non-finite'),
    ([1, 2], [1, float('inf')], 'non-finite'),
    ([[1, 2], [3, 4]], [[1, 2], [3, 4]], 'one-dimensional'),
    (['a', 'b'], [1, 2], 'numbers'),
    ([1, 2, 3], [1, 2, 3], 'identical'),
])
def test_bad_input_raises_value_error(d1, d2, message):
    with pytest.raises(ValueError, match=message):
        evaluate(d1, d2)
