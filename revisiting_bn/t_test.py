"""Statistical significance as in the paper: a one-sided paired t-test over seeds.

Runs with the same seed share the validation split, the initial weights' RNG
stream and the data order, so the proposed and baseline results are paired by
seed and the test is on their per-seed differences. ``evaluate`` is the paper's
test, with the original's arithmetic. Beside it, what a reader needs to weigh a
result (Bouthillier et al., MLSys 2021): the confidence interval of the mean
paired difference, its effect size, a test that does not assume normal
differences (Wilcoxon's signed-rank test), Holm's adjustment over several
comparisons, and the power of the test: the smallest gain these seeds would
detect, and how many seeds a gain of the observed size needs; and P(A>B), the
share of paired seeds where A beats B (Bouthillier et al. read it against 0.75),
with a percentile bootstrap interval over the seeds, stratified by protocol when
several protocols are pooled (as rliable does: Agarwal et al., NeurIPS 2021).
Every figure comes from SciPy's distributions and its bootstrap.
"""
import glob
import inspect

import numpy as np
from scipy import stats

from .cli import OneLineParser, as_number
from .protocol import SIGNIFICANCE

__all__ = ['SIGNIFICANCE', 'CONFIDENCE', 'POWER', 'BOOTSTRAP_RESAMPLES', 'evaluate', 'confidence_interval',
           'effect_size_dz', 'wilcoxon_p', 'holm', 'power', 'min_detectable_difference', 'seeds_needed',
           'prob_improvement', 'stratified_prob_improvement', 'paired_summary', 'format_p', 'half_width', 'main']

CONFIDENCE = 0.95  # of the two-sided interval of the mean paired difference
POWER = 0.8        # the chance of detecting a true gain that the power figures ask for
BOOTSTRAP_RESAMPLES = 10000
BOOTSTRAP_SEED = 0  # the bootstrap's draws are fixed: the same results always give the same interval
# SciPy names the bootstrap's random generator 'rng' from 1.15, 'random_state' before.
_RNG = 'rng' if 'rng' in inspect.signature(stats.bootstrap).parameters else 'random_state'


def _as_vector(values, name):
    """A 1-D NumPy array of ``values``, in their own floating dtype as the original passes them to
    SciPy (a float32 tensor is tested in float32); integers become float64, as SciPy makes them."""
    if hasattr(values, 'detach'):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
        if not np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be a sequence of numbers') from None
    if array.ndim != 1:
        raise ValueError(f'{name} must be one-dimensional, got shape {array.shape}')
    if not np.all(np.isfinite(array)):
        raise ValueError(f'{name} contains non-finite values (NaN or inf) at positions '
                         f'{np.flatnonzero(~np.isfinite(array)).tolist()}')
    return array


def _pairs(d1, d2, what):
    """``d1`` and ``d2`` as vectors (_as_vector), refused unless they pair up into at least 2 pairs (``what`` needs)."""
    a, b = _as_vector(d1, 'd1'), _as_vector(d2, 'd2')
    if a.shape != b.shape:
        raise ValueError(f'd1 and d2 must be paired (same length), got {a.size} and {b.size} values')
    if a.size < 2:
        raise ValueError(f'{what} at least 2 pairs, got {a.size}')
    return a, b


ALTERNATIVES = ('greater', 'two-sided', 'less')


def evaluate(d1, d2, alternative='greater'):
    """p-value of the one-sided paired t-test that ``d1`` is greater than ``d2``.

    ``d1[i]`` and ``d2[i]`` must come from the same seed. Accepts lists, NumPy
    arrays and torch tensors. The proposed method is significantly better than
    the baseline when the p-value is <= SIGNIFICANCE (0.05). ``alternative='two-sided'`` asks
    instead whether the two differ at all (e.g. two precisions of one method).
    Raises ValueError where no t-test exists: unequal lengths, fewer than 2 pairs,
    non-finite values, and paired differences that are all the same (identical
    inputs included): their variance is 0, so there is no t statistic and no p-value.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f'alternative must be one of {", ".join(ALTERNATIVES)}, got {alternative!r}')
    a, b = _pairs(d1, d2, 'the paired t-test needs')
    if np.all(a == b):
        raise ValueError('d1 and d2 are identical: every paired difference is 0, '
                         'so the t-test is undefined')
    _check_spread(a - b, max(np.abs(a).max(), np.abs(b).max()))
    return float(stats.ttest_rel(a, b, alternative=alternative).pvalue)


def _check_spread(differences, size):
    """Refuse differences that are all equal (up to the rounding of values of ``size``): t = mean / (std / sqrt(n))
    divides by a zero standard deviation there, which SciPy turns into p = 0 or 1 with a precision warning."""
    if np.ptp(differences) > 8 * np.finfo(differences.dtype).eps * size:
        return
    mean = float(np.mean(differences))
    raise ValueError(f'every paired difference is {mean:+.4g} (zero variance): the t statistic divides by their '
                     f'spread, so it is undefined and there is no p-value; all {differences.size} pairs move by '
                     f'the same amount, which a t-test cannot weigh (more pairs, or a test without a variance, '
                     f'such as the sign test, can)')


def _differences(d1, d2):
    """The paired differences d1 - d2 in float64, refused where no paired statistic exists (as ``evaluate``)."""
    a, b = _pairs(d1, d2, 'paired statistics need')
    return a.astype(np.float64) - b.astype(np.float64)


def _spread(differences):
    sd = float(np.std(differences, ddof=1))
    if not sd > 0:
        raise ValueError(f'every paired difference is {differences[0]:+.4g} (zero variance): no interval, effect '
                         f'size or power can be computed')
    return sd


def half_width(values, confidence=CONFIDENCE):
    """Half the width of the two-sided t-based ``confidence`` interval of the mean of ``values`` (0 for one value)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return 0.0
    return float(stats.t.ppf((1 + confidence) / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))


def confidence_interval(d1, d2, confidence=CONFIDENCE):
    """(low, high): the two-sided t-based ``confidence`` interval of the mean paired difference d1 - d2."""
    d = _differences(d1, d2)
    _spread(d)
    half = half_width(d, confidence)
    return float(d.mean() - half), float(d.mean() + half)


def effect_size_dz(d1, d2):
    """Cohen's d_z: the mean paired difference over the standard deviation of the differences."""
    d = _differences(d1, d2)
    return float(d.mean() / _spread(d))


def wilcoxon_p(d1, d2, alternative='greater'):
    """p-value of Wilcoxon's signed-rank test that d1 is greater than d2 (SciPy's: exact for small samples without
    ties or zero differences), which does not assume normally distributed differences."""
    d = _differences(d1, d2)
    if not np.any(d):
        raise ValueError('every paired difference is 0: the signed-rank test has nothing to rank')
    return float(stats.wilcoxon(d, alternative=alternative).pvalue)


def holm(p_values):
    """Holm's step-down adjustment of ``p_values`` (one family of comparisons), in their order: the i-th smallest p
    is multiplied by (m - i + 1), kept at least its predecessor's adjusted value, and capped at 1. None stays None
    (a comparison without a p-value is not counted in m)."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted, running = [None] * len(p_values), 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted


def power(n, difference, sd, alpha=SIGNIFICANCE):
    """The power of the one-sided paired t-test at ``alpha`` with ``n`` pairs when the true mean difference is
    ``difference`` and the differences' standard deviation ``sd`` (the noncentral t distribution)."""
    df = n - 1
    return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, difference / sd * np.sqrt(n)))


def min_detectable_difference(n, sd, alpha=SIGNIFICANCE, target=POWER):
    """The smallest true mean gain that the one-sided paired t-test at ``alpha`` detects with probability ``target``
    given ``n`` pairs whose differences spread by ``sd``: a smaller gain would likely go unseen."""
    if n < 2 or not sd > 0:
        raise ValueError(f'the power of a paired t-test needs at least 2 pairs and a spread > 0, got {n} and {sd}')
    high = sd
    while power(n, high, sd, alpha) < target:
        high *= 2
    from scipy.optimize import brentq
    return float(brentq(lambda delta: power(n, delta, sd, alpha) - target, 0.0, high, xtol=1e-12 * high))


def seeds_needed(difference, sd, alpha=SIGNIFICANCE, target=POWER):
    """The fewest paired seeds with which the one-sided paired t-test at ``alpha`` detects a true mean gain of
    ``difference`` (with differences spread by ``sd``) with probability ``target``; None when it is not a gain."""
    if not difference > 0:
        return None
    if not sd > 0:
        raise ValueError(f'the power of a paired t-test needs a spread > 0, got {sd}')
    low, high = 2, 2
    while power(high, difference, sd, alpha) < target:
        low, high = high, high * 2
    while low < high:  # power grows with n: the first n that reaches the target
        middle = (low + high) // 2
        low, high = (middle + 1, high) if power(middle, difference, sd, alpha) < target else (low, middle)
    return low


def _wins(d1, d2):
    """Per pair, whether d1 beats d2: 1, a tie one half, else 0."""
    a, b = _pairs(d1, d2, 'P(A>B) needs')
    return (a > b) + 0.5 * (a == b)


def _percentile_interval(samples, statistic, confidence, resamples, seed):
    """The percentile bootstrap interval of ``statistic`` over ``samples`` (each resampled apart: a stratified
    bootstrap when there are several), SciPy's bootstrap with a fixed seed."""
    result = stats.bootstrap(samples, statistic, n_resamples=resamples, method='percentile', vectorized=True,
                             confidence_level=confidence, **{_RNG: np.random.default_rng(seed)})
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def prob_improvement(d1, d2, confidence=CONFIDENCE, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """(P(A>B), low, high): the share of paired seeds where ``d1`` beats ``d2`` (a tie counts one half) and its
    two-sided ``confidence`` percentile bootstrap interval over the seeds."""
    wins = _wins(d1, d2)
    low, high = _percentile_interval((wins,), lambda x, axis=-1: x.mean(axis=axis), confidence, resamples, seed)
    return float(wins.mean()), low, high


def stratified_prob_improvement(pairs, confidence=CONFIDENCE, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """(mean P(A>B) over protocols, low, high) of several protocols' comparisons, ``pairs`` [(d1, d2), ...] one per
    protocol, with a stratified percentile bootstrap: each resample draws seeds within each protocol."""
    samples = tuple(_wins(d1, d2) for d1, d2 in pairs)

    def statistic(*resampled, axis=-1):
        return np.mean([x.mean(axis=axis) for x in resampled], axis=0)
    low, high = _percentile_interval(samples, statistic, confidence, resamples, seed)
    return float(np.mean([s.mean() for s in samples])), low, high


def paired_summary(d1, d2):
    """Every figure of one comparison of d1 against d2 (paired by seed), as report.py tabulates it; a figure that
    cannot be computed (fewer than 2 pairs, no spread) is None, with the reason under 'note'."""
    summary = {key: None for key in ('mean_difference', 'p_value', 'p_value_two_sided', 'ci95_low', 'ci95_high',
                                     'effect_size_dz', 'wilcoxon_p', 'min_detectable_difference', 'seeds_needed',
                                     'prob_improvement', 'prob_improvement_ci95_low', 'prob_improvement_ci95_high')}
    summary['note'], summary['wins'] = '', None
    if len(d1):
        summary['mean_difference'] = float(np.mean(_as_vector(d1, 'd1').astype(np.float64)
                                                   - _as_vector(d2, 'd2').astype(np.float64)))
    try:  # defined even where the t-test is not (every difference 0: P(A>B) = 0.5)
        summary['prob_improvement'], summary['prob_improvement_ci95_low'], summary['prob_improvement_ci95_high'] = \
            prob_improvement(d1, d2)
        summary['wins'] = int(np.sum(_wins(d1, d2) == 1))
    except ValueError:
        pass
    try:
        summary['p_value'], summary['p_value_two_sided'] = evaluate(d1, d2), evaluate(d1, d2, 'two-sided')
        summary['ci95_low'], summary['ci95_high'] = confidence_interval(d1, d2)
        summary['effect_size_dz'] = effect_size_dz(d1, d2)
        summary['wilcoxon_p'] = wilcoxon_p(d1, d2)
        sd = _spread(_differences(d1, d2))
        summary['min_detectable_difference'] = min_detectable_difference(len(d1), sd)
        summary['seeds_needed'] = seeds_needed(summary['mean_difference'], sd)
    except ValueError as error:
        summary['note'] = str(error)
    return summary


def format_p(p_value):
    """A p-value as every table, plot and message here writes it: 4 significant digits, so that 0.99993 reads
    0.9999 (not 1) and 0.0002133 keeps its size; None (no test possible) is 'n/a'."""
    return 'n/a' if p_value is None else f'{p_value:.4g}'


def _values_by_seed(items, side):
    """A side given on the command line: numbers in order, or result files keyed by seed."""
    from .results import group_runs, has_best, is_finished, load_runs
    numbers = [as_number(item) for item in items]
    if all(number is not None for number in numbers):
        return None, numbers
    for item, number in zip(items, numbers):
        if number is None and not glob.glob(item):
            raise ValueError(f'--{side}: {item!r} is neither a number nor a result file or folder')
    groups = group_runs(load_runs(items))
    if len(groups) != 1:
        raise ValueError(f'--{side} holds results of several configurations ({", ".join(groups)}): give one')
    runs = next(iter(groups.values()))
    unfinished = sorted(s for s, r in runs.items() if not is_finished(r['record']))
    if unfinished:
        raise ValueError(f'--{side} has unfinished runs for seeds {", ".join(map(str, unfinished))}')
    without_best = sorted(s for s, r in runs.items() if not has_best(r['record']))
    if without_best:
        raise ValueError(f'--{side} has runs without a best epoch (validation accuracy never above 0%) for seeds '
                         f'{", ".join(map(str, without_best))}')
    return {s: r['record']['test_accuracy_at_best'] for s, r in runs.items()}, None


def main(argv=None):
    """python t_test.py --proposed 91.7 93.4 ... --baseline 91.0 92.7 ...   (or result files/folders)"""
    parser = OneLineParser(prog='t_test.py', description='One-sided paired t-test that --proposed is greater '
                                                         'than --baseline (or two-sided: that they differ).')
    parser.add_argument('--proposed', nargs='+', required=True,
                        help='numbers (one per seed), or train.py result files/folders (paired by seed)')
    parser.add_argument('--baseline', nargs='+', required=True, help='the same for the baseline')
    parser.add_argument('--two_sided', action='store_true',
                        help='test whether the two differ in either direction (e.g. fp32 against bf16)')
    args = parser.parse_args(argv)
    try:
        proposed_by_seed, proposed = _values_by_seed(args.proposed, 'proposed')
        baseline_by_seed, baseline = _values_by_seed(args.baseline, 'baseline')
        if (proposed_by_seed is None) != (baseline_by_seed is None):
            raise ValueError('give numbers for both sides, or result files for both')
        if proposed_by_seed is not None:
            seeds = sorted(set(proposed_by_seed) & set(baseline_by_seed))
            unpaired = sorted(set(proposed_by_seed) ^ set(baseline_by_seed))
            if unpaired:
                print(f'seeds without a partner, left out: {", ".join(map(str, unpaired))}')
            proposed = [proposed_by_seed[s] for s in seeds]
            baseline = [baseline_by_seed[s] for s in seeds]
        p_value = evaluate(proposed, baseline, 'two-sided' if args.two_sided else 'greater')
    except Exception as error:  # bad numbers, unreadable or mixed files: one line, no traceback
        parser.exit(2, f't_test.py: error: {error}\n')
    difference = float(np.mean(np.subtract(proposed, baseline)))
    sides = 'two-sided' if args.two_sided else 'one-sided'
    verdict = 'not significant' if p_value > SIGNIFICANCE else (
        'significantly different' if args.two_sided else 'proposed is significantly greater')
    print(f'{sides} paired t-test, {len(proposed)} pairs: mean difference {difference:+.4g}, '
          f'p = {format_p(p_value)} ({verdict} at {SIGNIFICANCE:g})')
    return p_value

