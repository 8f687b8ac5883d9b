"""The report's figures (PNG, matplotlib): paired accuracies and differences, an ablation grid, curves, BN scales.

bn_scales.png shows the paper's observation: the learned BN scales stay close to
their initial value, so the initial value chosen for them matters. It is drawn from the
gammas in the results JSON (the per-layer statistics, norm_figures.py draws the
rest of them), or, for runs recorded without them, from the best weights.
"""
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from matplotlib.ticker import MaxNLocator  # noqa: E402

from .cli import as_number, plural  # noqa: E402
from .norm_figures import final_gammas, gamma_distance, norm_runs, spans_orders, xhat_by_layer  # noqa: E402
from .experiment import METHOD  # noqa: E402
from .protocol import INPUT_BN, SIGNIFICANCE, XHAT_THRESHOLD, resolve_bn_weight  # noqa: E402
from .results import is_finished  # noqa: E402
from .runs import run_files  # noqa: E402
from .t_test import format_p, half_width  # noqa: E402

__all__ = ['FIGURES', 'CAPTIONS', 'write_plots', 'best_weights_file', 'bn_scales', 'grid_axes']


def best_weights_file(run):
    """The run's best weights: where the results say, else beside the results (a copied folder tree)."""
    record, file = run['record'], run['file']
    root = os.path.dirname(os.path.dirname(os.path.abspath(file)))  # results/ is one level below the run's root
    candidates = [record.get('weights_file') or '', run_files(root, record['config']['name'])['weights']]
    return next((c for c in candidates if c and os.path.isfile(c)), None)


def bn_scales(state_dict):
    """(input-BN scales, all other BN scales) of a saved state_dict: the 1-D weights, as only normalisation layers
    have them (convolution and linear weights have 2 or more dimensions); BN, MABN, with or without running
    statistics alike."""
    scales = {key[:-len('weight')]: value.float() for key, value in state_dict.items()
              if key.endswith('weight') and value.dim() == 1}
    input_bn = [v.numpy() for p, v in scales.items() if p == f'{INPUT_BN}.']
    others = [v.numpy() for p, v in scales.items() if p != f'{INPUT_BN}.']
    cat = lambda parts: np.concatenate(parts) if parts else np.array([])  # noqa: E731
    return cat(input_bn), cat(others)


def _load_weights(path):
    import torch  # only for runs recorded without per-layer statistics: the report needs no torch otherwise
    return torch.load(path, map_location='cpu', weights_only=True)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def paired_accuracies(groups, comparisons, baseline, path):
    fig, axes = plt.subplots(1, len(comparisons), figsize=(5 * len(comparisons), 4), squeeze=False)
    for ax, c in zip(axes[0], comparisons):
        seeds = c['paired_seeds']
        base = [groups[baseline][s]['record']['test_accuracy_at_best'] for s in seeds]
        ours = [groups[c['configuration']][s]['record']['test_accuracy_at_best'] for s in seeds]
        # Each seed's pair side by side (baseline left, configuration right), so equal values stay visible.
        left, right = np.arange(len(seeds)) - 0.12, np.arange(len(seeds)) + 0.12
        for x0, x1, b, o in zip(left, right, base, ours):
            ax.plot([x0, x1], [b, o], color='tab:green' if o > b else 'tab:red' if o < b else 'tab:gray', alpha=0.6)
        ax.scatter(left, base, label=baseline, color='tab:gray', zorder=3)
        ax.scatter(right, ours, label=c['configuration'], color='tab:blue', zorder=3)
        ax.set_xticks(range(len(seeds)), [str(s) for s in seeds])
        ax.set(xlabel='seed', ylabel='test accuracy at best validation epoch (%)',
               title=f"{c['configuration']} vs {baseline}: p = {format_p(c['p_value'])}")
        ax.legend()
    _save(fig, path)


def curves(groups, path):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    keys = (('train_loss', 'training loss'), ('val_loss', 'validation loss'),
            ('val_accuracy', 'validation accuracy (%)'))
    drawn = {key: [] for key, _ in keys}
    for label, seeds in groups.items():
        finished = [r['record']['epochs'] for r in seeds.values() if is_finished(r['record'])]
        if not finished:
            continue
        length = min(len(e) for e in finished)
        epochs = np.arange(1, length + 1)
        for ax, (key, title) in zip(axes, keys):
            values = np.array([[row[key] for row in e[:length]] for e in finished])
            drawn[key].append(values)
            ax.plot(epochs, values.mean(0), label=f'{label} (n={len(finished)})',
                    marker='o' if length <= 30 else None, markersize=3)
            ax.fill_between(epochs, values.min(0), values.max(0), alpha=0.2)
    for ax, (key, title) in zip(axes, keys):
        logarithmic = key != 'val_accuracy' and spans_orders([v for values in drawn[key] for v in values.ravel()])
        if logarithmic:
            ax.set_yscale('log')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel='epoch', title=f'{title}{" (log scale)" if logarithmic else ""}\nmean over seeds, band: '
                                     f'lowest to highest')
    axes[0].legend()
    _save(fig, path)


def scales_after_training(groups, path):
    panels, found = [], 0
    for label, seeds in groups.items():
        inputs, others, sources = [], [], set()
        for run in seeds.values():
            recorded = run['record'].get('norm_statistics')
            weights = None if recorded else best_weights_file(run)
            found += bool(recorded or weights)
            if (recorded or weights) and is_finished(run['record']):
                input_scales, scales = final_gammas(recorded) if recorded else bn_scales(_load_weights(weights))
                inputs.append(input_scales)
                others.append(scales)
                sources.add('the last epoch' if recorded else 'the best weights')
        if others and sum(s.size for s in others):  # a network without normalisation layers has no panel
            initial = resolve_bn_weight(next(iter(seeds.values()))['record']['config']['bn_weight'])
            panels.append((label, initial, np.concatenate(others), np.concatenate(inputs), len(others),
                           ' and '.join(sorted(sources))))
    if not panels:
        return ('no gammas recorded in the results and no best weights found: the results name none that exists, and '
                'there is no networks/ folder beside results/ (weights are not kept with copied or committed results)'
                if not found else
                'no finished run has normalisation layers with a scale')
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (label, initial, scales, input_scales, n, source) in zip(axes[0], panels):
        # Bins around the data and the initial value: with lr/c the scales barely move. Far-off scales (a diverged
        # run) would squeeze the rest into one bin: then those beyond 5 interquartile ranges are left out, and named.
        low, high = min(scales.min(), initial), max(scales.max(), initial)
        q1, q3 = np.percentile(scales, [25, 75])
        inner = (min(q1 - 5 * (q3 - q1), initial), max(q3 + 5 * (q3 - q1), initial))
        clipped = q3 > q1 and (low < inner[0] or high > inner[1]) and high - low > 4 * (inner[1] - inner[0])
        if clipped:
            low, high = inner
        pad = max(high - low, 0.01 * initial) * 0.1
        shown = scales[(scales >= low - pad) & (scales <= high + pad)]
        ax.hist(shown, bins=np.linspace(low - pad, high + pad, 61), color='tab:blue', alpha=0.8)
        note = (f'\n{scales.size - shown.size} beyond [{low - pad:.3g}, {high + pad:.3g}] not shown\n(they reach '
                f'{scales.min():.3g} and {scales.max():.3g})' if clipped else '')
        ax.axvline(initial, color='black', linestyle='--', label=f'initial value {initial:g}')
        ax.set(xlabel=f'BN scale (gamma) after training\n(from {source})', ylabel='count',
               title=f'{label}\n{plural(scales.size // max(n, 1), "scale")} x {plural(n, "seed")} (input BN not '
                     f'shown){note}')
        ax.legend()
    _save(fig, path)
    return None


def differences(comparisons, baseline, path):
    """Per comparison (a row each), every seed's paired difference and their mean with its 95% interval."""
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.6 * len(comparisons)))
    for row, c in enumerate(comparisons):
        ax.scatter(c['differences'], [row] * len(c['differences']), color='tab:gray', alpha=0.6, s=14,
                   label='one seed' if row == 0 else None, zorder=2)
        if c['ci95_low'] is not None:
            ax.errorbar(c['mean_difference'], row, xerr=[[c['mean_difference'] - c['ci95_low']],
                                                          [c['ci95_high'] - c['mean_difference']]],
                        fmt='o', color='tab:blue', capsize=4, label='mean, 95% interval' if row == 0 else None,
                        zorder=3)
    ax.axvline(0, color='black', linewidth=0.8)
    ax.set_yticks(range(len(comparisons)), [f"{c['configuration']} (n={len(c['paired_seeds'])})"
                                            for c in comparisons])
    ax.invert_yaxis()
    ax.set(xlabel=f'configuration - {baseline} (points of test accuracy\nat the best validation epoch)',
           title=f'paired differences against {baseline}')
    ax.legend(fontsize='small', loc='best')
    _save(fig, path)


def _value(value):
    number = as_number(value)
    return f'{number:g}' if number is not None and not isinstance(value, bool) else str(value)


def grid_axes(groups, baseline):
    """The method settings (one or two, in --help's order) along which the configurations other than ``baseline``
    vary, when they form an ablation grid (sweep.py --grid); else None."""
    configs = {label: next(iter(seeds.values()))['record']['config'] for label, seeds in groups.items()
               if label != baseline}
    if len(configs) < 2:
        return None
    varying = [name for name in METHOD if len({repr(c.get(name)) for c in configs.values()}) > 1]
    others = [name for name in METHOD if name not in varying]
    if not 1 <= len(varying) <= 2 or any(len({repr(c.get(n)) for c in configs.values()}) > 1 for n in others):
        return None
    return varying


def grid(groups, rows, comparisons, baseline, axes, path):
    """Mean test accuracy at the best validation epoch with its 95% interval against the first grid setting, a line
    per value of the second; a filled star marks a configuration significantly above the baseline after Holm."""
    by_label = {r['configuration']: r for r in rows}
    tested = {c['configuration']: c for c in comparisons}
    first, second = axes[0], (axes[1] if len(axes) > 1 else None)
    lines = {}
    for label, seeds in groups.items():
        if label == baseline or not by_label[label]['best_values']:
            continue
        config = next(iter(seeds.values()))['record']['config']
        lines.setdefault(None if second is None else config.get(second), []).append((config.get(first), label))
    numeric = all(as_number(x) is not None for points in lines.values() for x, _ in points)
    values = sorted({as_number(x) for points in lines.values() for x, _ in points}) if numeric else []
    logarithmic = bool(values) and values[0] > 0 and values[-1] / values[0] >= 10
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ordered = sorted(lines.items(), key=lambda item: (as_number(item[0]) is None, as_number(item[0]) or 0, str(item[0])))
    for index, (value, points) in enumerate(ordered):
        points = sorted(points, key=lambda p: as_number(p[0]) if numeric else str(p[0]))
        shift = index - (len(ordered) - 1) / 2  # the lines side by side at each x, so their intervals stay apart
        if numeric and logarithmic:
            xs = [as_number(x) * 10 ** (0.012 * shift) for x, _ in points]
        elif numeric:
            xs = [as_number(x) + 0.008 * shift * ((values[-1] - values[0]) or 1) for x, _ in points]
        else:
            xs = [str(x) for x, _ in points]
        means, halves = [], []
        for _, label in points:
            accuracies = np.asarray(by_label[label]['best_values'], dtype=float)
            means.append(accuracies.mean())
            halves.append(half_width(accuracies))
        line = ax.errorbar(xs, means, yerr=halves, marker='o', capsize=3,
                           label=f'{second} = {_value(value)}' if second else first)[0]
        for x, mean, (_, label) in zip(xs, means, points):
            p = tested.get(label, {}).get('p_holm')
            if p is not None and p <= SIGNIFICANCE:
                ax.plot(x, mean, marker='*', markersize=16, color=line.get_color(), zorder=4)
    base = by_label.get(baseline, {}).get('best_values')
    if base:
        ax.axhline(np.mean(base), color='black', linestyle='--', linewidth=1,
                   label=f'{baseline} (mean of {len(base)} seeds)')
    if numeric:
        if logarithmic:
            ax.set_xscale('log')
        ax.set_xticks(values, [f'{v:g}' for v in values])
        ax.minorticks_off()
    ax.set(xlabel=first, ylabel='test accuracy at best validation epoch (%)',
           title=f'ablation grid: mean and 95% interval over seeds\n(star: significantly above {baseline} after Holm)')
    ax.legend(fontsize='small')
    _save(fig, path)


STEMS = ('paired_accuracies', 'differences', 'grid', 'curves', 'bn_scales', 'gamma_distance', 'xhat')
CAPTIONS = {  # what each figure shows, in one sentence, for report.md
    'paired_accuracies': 'each seed\'s test accuracy at the best validation epoch, the baseline\'s beside each '
                         'configuration\'s.',
    'differences': 'every seed\'s paired difference from the baseline, and their mean with its 95% interval.',
    'grid': 'the ablation grid: mean accuracy and its 95% interval against the first setting, a line per value of the '
            'second, a star where significantly above the baseline after Holm.',
    'curves': 'training loss, validation loss and validation accuracy by epoch, the mean over seeds and the range.',
    'bn_scales': 'every BN scale after training against its initial value (the paper\'s first observation).',
    'gamma_distance': 'how far gamma moved from its start, epoch by epoch, in the early, middle and late layers.',
    'xhat': f'the largest |x_hat| and the share of |x_hat| above {XHAT_THRESHOLD:g}, layer by layer, after the first and '
            f'the last '
            'epoch (the paper\'s second observation).',
}
FIGURES = tuple(f'{stem}.png' for stem in STEMS)


def write_plots(groups, rows, comparisons, baseline, out, suffix=''):
    """Write the figures that the data allows, each named {stem}{suffix}.png; returns {figure: why it was not made}
    for the others (a grid figure only where the configurations form a grid)."""
    not_made, name = {}, lambda stem: f'{stem}{suffix}.png'  # noqa: E731
    paired = [c for c in comparisons if c['paired_seeds']]
    if paired:
        paired_accuracies(groups, paired, baseline, os.path.join(out, name('paired_accuracies')))
        differences(paired, baseline, os.path.join(out, name('differences')))
    else:
        for stem in ('paired_accuracies', 'differences'):
            not_made[name(stem)] = f'no seed has finished runs of both {baseline} and another configuration'
    axes = grid_axes(groups, baseline)
    if axes:
        grid(groups, rows, comparisons, baseline, axes, os.path.join(out, name('grid')))
    curves(groups, os.path.join(out, name('curves')))
    problem = scales_after_training(groups, os.path.join(out, name('bn_scales')))
    if problem:
        not_made[name('bn_scales')] = problem
    runs = norm_runs(groups)
    for stem, draw in (('gamma_distance', gamma_distance), ('xhat', xhat_by_layer)):
        if runs:
            _save(draw(runs), os.path.join(out, name(stem)))
        else:
            not_made[name(stem)] = 'no finished run recorded per-layer statistics (runs made with ' \
                                   '--no_norm_statistics or by an older train.py)'
    return not_made
