"""The paired t-test: the README's example, the alternatives, input types and bad input."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import README_BASELINE as BASE
from conftest import README_PROPOSED as NEW
from revisiting_bn.t_test import evaluate, format_p


def one_sided_p_by_hand(a, b):
    d = np.asarray(a, float) - np.asarray(b, float)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    return stats.t.sf(t, df=len(d) - 1)


def test_readme_example_matches_the_paired_t_formula():
    p = evaluate(np.array(NEW), np.array(BASE))
    # SciPy's t statistic and ours differ in summation order: a few ulp of float64, far inside 1e-12
    assert p == pytest.approx(one_sided_p_by_hand(NEW, BASE), rel=1e-12)
    assert p == pytest.approx(0.0573692, abs=1e-6)  # the README's 0.0574, to the digits printed there


def test_two_sided_and_less_alternatives():
    assert evaluate(NEW, BASE, 'two-sided') == 2 * evaluate(NEW, BASE)  # SciPy doubles the smaller tail
    # cdf and sf are computed separately: they sum to 1 up to a few ulp of float64
    assert evaluate(NEW, BASE, 'less') == pytest.approx(1 - evaluate(NEW, BASE), rel=1e-12)
    assert evaluate(BASE, NEW, 'two-sided') == evaluate(NEW, BASE, 'two-sided')  # t -> -t: the same tails
    with pytest.raises(ValueError, match='alternative must be one of'):
        evaluate(NEW, BASE, 'bigger')


def test_direction_and_input_types():
    better = [x + 1 + 0.1 * i for i, x in enumerate(BASE)]
    assert evaluate(better, BASE) < 0.001
    assert evaluate(BASE, better) > 0.999
    expected = evaluate(NEW, BASE)
    as_float64 = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    assert evaluate(as_float64(NEW), as_float64(BASE)) == expected
    assert evaluate(tuple(NEW), np.array(BASE)) == expected
    # float32 tensors are tested in float32, as the original passes them to SciPy
    float32 = evaluate(torch.tensor(NEW), torch.tensor(BASE))
    assert float32 == float(stats.ttest_rel(np.float32(NEW), np.float32(BASE), alternative='greater').pvalue)
    assert float32 != expected and float32 == pytest.approx(expected, rel=1e-5)  # float32 rounding of the data


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


def test_format_p_keeps_four_significant_digits():
    # Three digits would print a p-value of 0.99993 as '1', as the plots once did beside the tables' 0.9999.
    assert format_p(0.99993) == '0.9999'
    assert format_p(0.00021331) == '0.0002133'
    assert format_p(None) == 'n/a'
