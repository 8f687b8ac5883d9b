"""Which source of variance moves the accuracy more: the validation split, or the initialisation and data order?

    python benchmarks/variance_sources.py --out experiments/variance_sources

Bouthillier et al.'s design ("Accounting for Variance in Machine Learning Benchmarks", MLSys 2021):
runs that vary one source only. For each configuration (baseline, proposed), the test accuracy at the
best validation epoch of runs whose trial seed varies with the split fixed (experiments/variance_init:
seeds 1-10, split seed 0), against runs whose split varies with the trial seed fixed
(experiments/variance_split_*: split seeds 1-10, seed 1). Writes variance_sources.csv (per
configuration and source: runs, mean, standard deviation with its 95% chi-square interval, and the
source's share of the two variances, and a two-sided F-test of their equality) and variance_sources.png, and prints
the table.
"""
import argparse
import csv
import os
import sys

import numpy as np
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from revisiting_bn.figure_style import colours, legend_below, panels, save, titled  # noqa: E402
from revisiting_bn.results import load_runs  # noqa: E402

SOURCES = {  # source -> (folder under experiments/, which runs of it, by configuration)
    'initialisation and data order': ('variance_init', lambda label, config: label == config),
    'validation split': ('variance_split_{config}', lambda label, config: label.startswith('split_seed')),
}


def accuracies(experiments, config):
    """{source: [test accuracy at the best validation epoch]} of one configuration."""
    found = {}
    for source, (folder, chosen) in SOURCES.items():
        runs = load_runs([os.path.join(experiments, folder.format(config=config))])
        found[source] = [run['record']['test_accuracy_at_best'] for run in runs if chosen(run['label'], config)]
    return found


def spread(values):
    """(mean, standard deviation, its 95% interval from the chi-square distribution)."""
    values = np.asarray(values, dtype=float)
    n, sd = values.size, values.std(ddof=1)
    low, high = (np.sqrt((n - 1) * sd ** 2 / stats.chi2.ppf(q, n - 1)) for q in (0.975, 0.025))
    return values.mean(), sd, low, high


def table(experiments):
    rows = []
    for config in ('baseline', 'proposed'):
        found = accuracies(experiments, config)
        variances = {source: np.var(values, ddof=1) for source, values in found.items()}
        (init, split), sizes = variances.values(), [len(values) for values in found.values()]
        ratio = split / init  # two-sided F-test of equal variances
        p = 2 * min(stats.f.cdf(ratio, sizes[1] - 1, sizes[0] - 1), stats.f.sf(ratio, sizes[1] - 1, sizes[0] - 1))
        for source, values in found.items():
            mean, sd, low, high = spread(values)
            rows.append({'configuration': config, 'source': source, 'runs': len(values), 'mean': mean, 'std': sd,
                         'std_ci95_low': low, 'std_ci95_high': high,
                         'share_of_variance': variances[source] / sum(variances.values()),
                         'split_to_init_variance_ratio': ratio, 'equal_variance_p': min(1.0, p), 'values': values})
    return rows


def figure(rows, path):
    configs = list(dict.fromkeys(r['configuration'] for r in rows))
    fig, axes = panels(len(configs), sharey=True, panel=(5.2, 3.6))
    palette = dict(zip(SOURCES, colours(len(SOURCES))))
    for ax, config in zip(axes, configs):
        mine = [r for r in rows if r['configuration'] == config]
        for x, r in enumerate(mine):
            jitter = np.random.default_rng(x).uniform(-0.12, 0.12, len(r['values']))  # fixed, so the figure repeats
            ax.scatter(x + jitter, r['values'], color=palette[r['source']], s=18, zorder=3)
            ax.errorbar(x + 0.3, r['mean'], yerr=r['std'], fmt='D', color='black', capsize=4)
        ax.set_xticks(range(len(mine)), [f"{r['source']}\n(sd {r['std']:.2f}, {r['share_of_variance']:.0%} of the "
                                          f"variance)" for r in mine], fontsize='small')
        ax.set_xlim(-0.5, len(mine) - 0.3)
        ax.set(title=config)
        ax.grid(axis='y', alpha=0.3)
    axes[0].set_ylabel('test accuracy at best val. epoch (%)')
    titled(fig, 'One source of variance at a time: 10 runs each (the other source fixed)',
           'fashionmnist, mlp, 30 epochs, batch 128')
    from matplotlib.lines import Line2D
    legend_below(fig, [Line2D([], [], color=c, marker='o', linestyle='') for c in palette.values()] +
                 [Line2D([], [], color='black', marker='D')], [*SOURCES, 'mean ± standard deviation'])
    save(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--experiments', default=os.path.join(ROOT, 'experiments'))
    parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'variance_sources'))
    args = parser.parse_args()
    rows = table(args.experiments)
    os.makedirs(args.out, exist_ok=True)
    columns = ['configuration', 'source', 'runs', 'mean', 'std', 'std_ci95_low', 'std_ci95_high', 'share_of_variance',
               'split_to_init_variance_ratio', 'equal_variance_p']
    with open(os.path.join(args.out, 'variance_sources.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, columns, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    figure(rows, os.path.join(args.out, 'variance_sources.png'))
    print('| configuration | source of variance | runs | mean (%) | standard deviation [95% interval] | share of the '
          'variance | F-test of equal variances |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['configuration']} | {r['source']} | {r['runs']} | {r['mean']:.2f} | {r['std']:.2f} "
              f"[{r['std_ci95_low']:.2f}, {r['std_ci95_high']:.2f}] | {r['share_of_variance']:.0%} | "
              f"ratio {r['split_to_init_variance_ratio']:.2f}, p = {r['equal_variance_p']:.2f} |")


if __name__ == '__main__':
    main()
