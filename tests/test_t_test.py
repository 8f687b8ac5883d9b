"""The paired t-test: the README's example, the alternatives, input types and bad input; and the figures that say how
sure a comparison is (interval, effect size, Wilcoxon, Holm, power), against SciPy and textbook values."""
import math
import os

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import README_BASELINE as BASE
from conftest import ROOT
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


# ----------------------------------------------------------------------------- how sure: intervals, effect, power

def test_confidence_interval_and_effect_size_are_the_textbook_ones_and_scipys():
    """Differences 1..5: mean 3, s = sqrt(2.5), t(0.975, 4) = 2.7764: 3 -+ 2.7764 x 0.7071 = [1.0368, 4.9632]."""
    from revisiting_bn.t_test import confidence_interval, effect_size_dz
    low, high = confidence_interval([1, 2, 3, 4, 5], [0] * 5)
    assert (low, high) == pytest.approx((1.0368, 4.9632), abs=1e-4)
    reference = stats.ttest_rel(NEW, BASE).confidence_interval(0.95)
    assert confidence_interval(NEW, BASE) == pytest.approx(tuple(reference), rel=1e-12)
    assert effect_size_dz([1, 2, 3, 4, 5], [0] * 5) == pytest.approx(3 / np.sqrt(2.5))


def test_wilcoxon_is_exact_for_small_samples():
    """Five positive differences: the exact one-sided p is 1 / 2^5."""
    from revisiting_bn.t_test import wilcoxon_p
    assert wilcoxon_p([1.5, 2, 3, 4.5, 5], [0] * 5) == 1 / 32
    assert wilcoxon_p(NEW, BASE) == stats.wilcoxon(NEW, BASE,
                                                                           alternative='greater').pvalue
    with pytest.raises(ValueError, match='nothing to rank'):
        wilcoxon_p([1, 2], [1, 2])


def test_holm_steps_down_and_stays_monotone():
    """The textbook example: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> 0.06 (kept
    at least its predecessor), capped at 1; a missing p-value stays missing and is not counted."""
    from revisiting_bn.t_test import holm
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.4]) == [0.8, None, 0.8] and holm([0.9, 0.8]) == [1.0, 1.0]


def test_power_smallest_detectable_difference_and_seeds_needed():
    """G*Power's textbook case: a one-tailed paired t-test at alpha 0.05 needs 27 pairs for 80% power at d_z = 0.5;
    the smallest detectable difference is where the power reaches 80%, and near the normal approximation
    (z_0.95 + z_0.8) x sd / sqrt(n) for many pairs."""
    from revisiting_bn.t_test import min_detectable_difference, power, seeds_needed
    assert seeds_needed(0.5, 1.0) == 27 and power(27, 0.5, 1.0) >= 0.8 > power(26, 0.5, 1.0)
    assert seeds_needed(-0.1, 1.0) is None and seeds_needed(0.0, 1.0) is None
    for n in (3, 15, 400):
        mdd = min_detectable_difference(n, 2.0)
        assert power(n, mdd, 2.0) == pytest.approx(0.8, abs=1e-9)
    normal = (stats.norm.ppf(0.95) + stats.norm.ppf(0.8)) * 2.0 / np.sqrt(400)
    assert min_detectable_difference(400, 2.0) == pytest.approx(normal, rel=0.01)
    assert min_detectable_difference(15, 2.0) > (stats.norm.ppf(0.95) + stats.norm.ppf(0.8)) * 2.0 / np.sqrt(15)


def exact_percentiles(wins, confidence=0.95):
    """The bootstrap distribution of the mean of ``wins`` worked out exactly (every one of the n^n resamples, equally
    likely), and its lower and upper percentiles: what the percentile bootstrap estimates with 10,000 draws."""
    import itertools
    means = sorted(sum(draw) / len(wins) for draw in itertools.product(wins, repeat=len(wins)))
    tail = (1 - confidence) / 2
    return means[math.floor(tail * len(means))], means[math.ceil((1 - tail) * len(means)) - 1]


@pytest.mark.parametrize('d1, d2, share', [
    ([1, 0], [0, 1], 0.5),                      # one win, one loss
    ([2, 2, 0], [1, 1, 1], 2 / 3),
    ([3, 2, 1, 1], [1, 1, 1, 2], 0.625),        # two wins, a tie (one half), a loss: 2.5 / 4
    ([5, 6, 7, 8, 9], [1, 2, 3, 4, 5], 1.0),    # every seed: the interval is the point
])
def test_prob_improvement_is_the_share_of_seeds_won_with_its_bootstrap_interval(d1, d2, share):
    from revisiting_bn.t_test import prob_improvement
    p, low, high = prob_improvement(d1, d2)
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(d1, d2)]
    assert p == pytest.approx(share)
    assert (low, high) == pytest.approx(exact_percentiles(wins))
    assert prob_improvement(d1, d2) == (p, low, high)  # a fixed seed: the same interval every time


def test_pooled_prob_improvement_resamples_seeds_within_each_protocol():
    from revisiting_bn.t_test import stratified_prob_improvement
    mean, low, high = stratified_prob_improvement([([1, 1, 1], [0, 0, 0]), ([0, 0, 1, 1], [1, 1, 0, 0])])
    assert mean == 0.75  # (1 + 0.5) / 2: protocols weigh the same, whatever their seeds
    assert low == pytest.approx(0.5 + exact_percentiles([0, 0, 1, 1])[0] / 2)  # only the second protocol varies
    assert high == pytest.approx(0.5 + exact_percentiles([0, 0, 1, 1])[1] / 2)


def test_the_interval_covers_a_known_prob_improvement_as_often_as_measured():
    """A small run of benchmarks/prob_improvement_coverage.py: with 15 seeds and P(A>B) 0.5 the interval holds the
    truth in about 94% of experiments (1,000 simulations; docs/experiments.md); 300 here, with fewer resamples."""
    import sys
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    from prob_improvement_coverage import coverage
    assert coverage(15, 0.5, 300, resamples=2000) >= 0.88
    assert coverage(5, 0.9, 300, resamples=2000) < 0.6  # the shortfall the docs name: few seeds, P near 1
