"""How often P(A>B)'s 95% percentile bootstrap interval covers the true P(A>B), measured on synthetic paired data.

    python benchmarks/prob_improvement_coverage.py --simulations 1000

Each simulated experiment draws the paired differences of n seeds from a normal distribution
N(mu, 1), so that A beats B on a seed with the known probability P = Phi(mu), computes the
interval as report.py does (t_test.prob_improvement: 10,000 resamples), and counts whether it
holds P. Prints a table of the coverage for n = 5, 10, 15 seeds and P = 0.5, 0.75, 0.9, with a
binomial standard error; docs/experiments.md gives its numbers.
"""
import argparse
import os
import sys

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from revisiting_bn.t_test import BOOTSTRAP_RESAMPLES, prob_improvement  # noqa: E402


def coverage(seeds, probability, simulations, resamples=BOOTSTRAP_RESAMPLES, seed=0):
    """The share of ``simulations`` experiments of ``seeds`` paired seeds whose interval holds ``probability``."""
    generator = np.random.default_rng(seed)
    mu = stats.norm.ppf(probability)
    held = 0
    for _ in range(simulations):
        differences = generator.normal(mu, 1.0, seeds)
        _, low, high = prob_improvement(differences, np.zeros(seeds), resamples=resamples)
        held += low <= probability <= high
    return held / simulations


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--simulations', type=int, default=1000)
    args = parser.parse_args()
    print('| seeds | P(A>B) = 0.5 | 0.75 | 0.9 |')
    print('|---|---|---|---|')
    for seeds in (5, 10, 15):
        cells = []
        for probability in (0.5, 0.75, 0.9):
            covered = coverage(seeds, probability, args.simulations)
            cells.append(f'{covered:.3f} (± {np.sqrt(covered * (1 - covered) / args.simulations):.3f})')
        print(f'| {seeds} | ' + ' | '.join(cells) + ' |', flush=True)


if __name__ == '__main__':
    main()
