"""The report's figures (PNG, matplotlib): paired accuracies and differences, an ablation grid, curves, BN scales.

bn_scales.png shows the paper's observation: the learned BN scales stay close to
their initial value, so the initial value chosen for them matters. It is drawn from the
gammas in the results JSON (the per-layer statistics, norm_figures.py draws the
rest of them), or, for runs recorded without them, from the best weights. Every figure
is drawn through figure_style.py: titled with its protocol, small multiples on shared
axes, a colour per configuration, the legend below the data.
"""
import multiprocessing
import os
import sys

import numpy as np
from matplotlib.lines import Line2D

from .cli import as_number, plural
from .cpu_threads import usable_cores
from .experiment import METHOD
from .figure_style import (MAX_COLUMNS, MAX_WIDTH, PANEL, colours, epoch_axis, legend_below, panels, save,
                           spans_orders, titled)
from .norm_figures import final_gammas, gamma_distance, norm_runs, xhat_by_layer
from .protocol import INPUT_BN, SIGNIFICANCE, XHAT_THRESHOLD, resolve_bn_weight
from .results import is_finished
from .runs import run_files
from .t_test import CONFIDENCE, format_p, half_width

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


TEST = 'one-sided paired t-test'


def _p_words(c, family):
    """A comparison's p-value as its panel says it: with several comparisons, Holm's adjusted p beside it."""
    words = f"p = {format_p(c['p_value'])}"
    if family > 1 and c['p_holm'] is not None:
        words += f", Holm {format_p(c['p_holm'])}"
    return words + (' *' if c['significant'] else '')


def paired_accuracies(groups, comparisons, baseline, path, protocol=''):
    """A panel per comparison (at most four to a row, one accuracy scale): each seed's baseline and configuration
    side by side, joined by a line that is green where the configuration is higher and red where lower."""
    seeds_shown = max(len(c['paired_seeds']) for c in comparisons)
    columns = min(MAX_COLUMNS, len(comparisons))  # as wide as the seeds need, the whole no wider than MAX_WIDTH
    figure, axes = panels(len(comparisons), sharey=True,
                          panel=(min(MAX_WIDTH / columns, max(PANEL[0], 0.35 * seeds_shown + 1.5)), PANEL[1]))
    for ax, c in zip(axes, comparisons):
        seeds = c['paired_seeds']
        base = [groups[baseline][s]['record']['test_accuracy_at_best'] for s in seeds]
        ours = [groups[c['configuration']][s]['record']['test_accuracy_at_best'] for s in seeds]
        left, right = np.arange(len(seeds)) - 0.12, np.arange(len(seeds)) + 0.12
        for x0, x1, b, o in zip(left, right, base, ours):
            ax.plot([x0, x1], [b, o], color='tab:green' if o > b else 'tab:red' if o < b else 'tab:gray', alpha=0.6)
        ax.scatter(left, base, color='tab:gray', zorder=3, s=16)
        ax.scatter(right, ours, color='tab:blue', zorder=3, s=16)
        ax.set_xticks(range(len(seeds)), [str(s) for s in seeds])
        ax.set(xlabel='seed', title=f"{c['configuration']}\n{_p_words(c, len(comparisons))}")
        ax.grid(axis='y', alpha=0.3)
    axes[0].set_ylabel('test accuracy at best val. epoch (%)')
    family = f', Holm-adjusted over {len(comparisons)} comparisons' if len(comparisons) > 1 else ''
    titled(figure, f'Each seed: {baseline} (grey) beside the configuration (blue); p: {TEST} (configuration > '
                   f'{baseline}){family}; * p <= {SIGNIFICANCE:g}', protocol)
    legend_below(figure, [Line2D([], [], color='tab:gray', marker='o', linestyle=''),
                          Line2D([], [], color='tab:blue', marker='o', linestyle=''),
                          Line2D([], [], color='tab:green'), Line2D([], [], color='tab:red')],
                 [baseline, 'configuration', 'configuration higher', 'configuration lower'])
    save(figure, path)


def curves(groups, path, protocol=''):
    """Training loss, validation loss and validation accuracy by epoch: a colour per configuration, the mean over
    seeds and a band from the lowest to the highest seed."""
    figure, axes = panels(3)
    keys = (('train_loss', 'training loss'), ('val_loss', 'validation loss'),
            ('val_accuracy', 'validation accuracy (%)'))
    drawn, handles, labels, epochs_seen = {key: [] for key, _ in keys}, [], [], set()
    for colour, (label, seeds) in zip(colours(len(groups)), groups.items()):
        finished = [r['record']['epochs'] for r in seeds.values() if is_finished(r['record'])]
        if not finished:
            continue
        length = min(len(e) for e in finished)
        epochs = np.arange(1, length + 1)
        epochs_seen.update(epochs.tolist())
        for ax, (key, _) in zip(axes, keys):
            values = np.array([[row[key] for row in e[:length]] for e in finished])
            drawn[key].append(values)
            line, = ax.plot(epochs, values.mean(0), color=colour, marker='o' if length <= 30 else None, markersize=3)
            ax.fill_between(epochs, values.min(0), values.max(0), color=colour, alpha=0.15, linewidth=0)
        handles.append(line)
        labels.append(f'{label} (n={len(finished)})')
    for ax, (key, title) in zip(axes, keys):
        logarithmic = key != 'val_accuracy' and spans_orders([v for values in drawn[key] for v in values.ravel()])
        if logarithmic:
            ax.set_yscale('log')
        epoch_axis(ax, epochs_seen or {1})
        ax.set(title=f'{title}{" (log scale)" if logarithmic else ""}')
        ax.grid(alpha=0.3)
    titled(figure, 'Training curves (mean over seeds, band: lowest to highest)', protocol)
    legend_below(figure, handles, labels)
    save(figure, path)


def _final_scales(groups):
    """[(configuration, initial scale, its scales after training, seeds, source)] of the configurations whose finished
    runs have scales, and how many runs had any to give: from the recorded statistics, else the best weights."""
    found, scales = 0, []
    for label, seeds in groups.items():
        others, sources = [], set()
        for run in seeds.values():
            recorded = run['record'].get('norm_statistics')
            weights = None if recorded else best_weights_file(run)
            found += bool(recorded or weights)
            if (recorded or weights) and is_finished(run['record']):
                others.append((final_gammas(recorded) if recorded else bn_scales(_load_weights(weights)))[1])
                sources.add('the last epoch' if recorded else 'the best weights')
        if others and sum(s.size for s in others):  # a network without normalisation layers has no panel
            initial = resolve_bn_weight(next(iter(seeds.values()))['record']['config']['bn_weight'])
            scales.append((label, initial, np.concatenate(others), len(others), ' and '.join(sorted(sources))))
    return scales, found


def _scale_range(scales):
    """The range every panel shows: the scales and their initial values. Far-off scales (a diverged run) would squeeze
    the rest into one bin: then those beyond 5 interquartile ranges of all scales are left out (and named)."""
    pooled = np.concatenate([values for _, _, values, _, _ in scales])
    initials = [initial for _, initial, _, _, _ in scales]
    low, high = min(pooled.min(), *initials), max(pooled.max(), *initials)
    q1, q3 = np.percentile(pooled, [25, 75])
    inner = (min(q1 - 5 * (q3 - q1), *initials), max(q3 + 5 * (q3 - q1), *initials))
    if q3 > q1 and (low < inner[0] or high > inner[1]) and high - low > 4 * (inner[1] - inner[0]):
        low, high = inner
    pad = max(high - low, 0.01 * max(initials)) * 0.05
    return low - pad, high + pad


def scales_after_training(groups, path, protocol=''):
    """A panel per configuration (on one scale, the same bins): every BN scale after training, its initial value
    marked; returns why the figure could not be made, or None."""
    scales, found = _final_scales(groups)
    if not scales:
        return ('no gammas recorded in the results and no best weights found: the results name none that exists, and '
                'there is no networks/ folder beside results/ (weights are not kept with copied or committed results)'
                if not found else 'no finished run has normalisation layers with a scale')
    low, high = _scale_range(scales)
    figure, axes = panels(len(scales), sharex=True, sharey=True)
    for ax, (label, initial, values, n, source) in zip(axes, scales):
        shown = values[(values >= low) & (values <= high)]
        ax.hist(shown, bins=np.linspace(low, high, 61), color='tab:blue', alpha=0.8, histtype='stepfilled')
        ax.axvline(initial, color='black', linestyle='--')
        left_out = f'; {values.size - shown.size} beyond the axis (to {values.min():.3g}, {values.max():.3g})' \
            if shown.size < values.size else ''
        ax.set(title=f'{label}\n{plural(values.size // max(n, 1), "scale")} x {plural(n, "seed")}{left_out}',
               xlabel=f'gamma after training (from {source})')
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('count')
    titled(figure, 'Every BN scale after training (input BN apart) against its initial value', protocol)
    legend_below(figure, [Line2D([], [], color='tab:blue', linewidth=6), Line2D([], [], color='black',
                                                                                 linestyle='--')],
                 ['BN scales after training', 'initial value'])
    save(figure, path)
    return None


def differences(comparisons, baseline, path, protocol=''):
    """Per comparison (a row each), every seed's paired difference and, apart from them, their mean with its
    interval."""
    figure, axes = panels(1, panel=(8, 0.9 + 0.45 * len(comparisons)))
    ax = axes[0]
    for row, c in enumerate(comparisons):
        ax.scatter(c['differences'], [row - 0.12] * len(c['differences']), color='tab:gray', alpha=0.7, s=12,
                   zorder=2)
        if c['ci95_low'] is not None:
            ax.errorbar(c['mean_difference'], row + 0.12, xerr=[[c['mean_difference'] - c['ci95_low']],
                                                                 [c['ci95_high'] - c['mean_difference']]],
                        fmt='D', color='black', markersize=5, capsize=4, zorder=3)
    ax.axvline(0, color='tab:red', linewidth=0.8)
    ax.set_ylim(-0.5, len(comparisons) - 0.5)
    ax.set_yticks(range(len(comparisons)), [f"{c['configuration']}{' *' if c['significant'] else ''} (n="
                                            f"{len(c['paired_seeds'])})" for c in comparisons])
    ax.invert_yaxis()
    ax.grid(axis='x', alpha=0.3)
    ax.set(xlabel=f'configuration - {baseline}: points of test accuracy at the best validation epoch')
    holm = f'; * significant after Holm over {len(comparisons)} comparisons' if len(comparisons) > 1 else \
        f'; * significant ({TEST}, p <= {SIGNIFICANCE:g})'
    titled(figure, f'Paired differences from {baseline}{holm}', protocol)
    legend_below(figure, [Line2D([], [], color='tab:gray', marker='o', linestyle=''),
                          Line2D([], [], color='black', marker='D', linestyle='-')],
                 ['one seed', f'mean with its {CONFIDENCE:.0%} t-interval'])
    save(figure, path)


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


def _grid_lines(groups, rows, baseline, first, second):
    """[(value of the second setting, [(value of the first, mean, half width of its interval, configuration)])], in
    order, and whether the first setting's values are numbers (then their sorted values)."""
    by_label, lines = {r['configuration']: r for r in rows}, {}
    for label, seeds in groups.items():
        if label == baseline or not by_label[label]['best_values']:
            continue
        config = next(iter(seeds.values()))['record']['config']
        accuracies = np.asarray(by_label[label]['best_values'], dtype=float)
        lines.setdefault(None if second is None else config.get(second), []).append(
            (config.get(first), accuracies.mean(), half_width(accuracies), label))
    numeric = all(as_number(x) is not None for points in lines.values() for x, *_ in points)
    values = sorted({as_number(x) for points in lines.values() for x, *_ in points}) if numeric else []
    key = (lambda p: as_number(p[0])) if numeric else (lambda p: str(p[0]))  # noqa: E731
    ordered = sorted(lines.items(), key=lambda item: (as_number(item[0]) is None, as_number(item[0]) or 0,
                                                      str(item[0])))
    return [(value, sorted(points, key=key)) for value, points in ordered], values


def grid(groups, rows, comparisons, baseline, axes, path, protocol=''):
    """Mean test accuracy at the best validation epoch with its interval against the first grid setting, a line (a
    colour) per value of the second; a star marks a configuration significantly above the baseline after Holm."""
    first, second = axes[0], (axes[1] if len(axes) > 1 else None)
    significant = {c['configuration'] for c in comparisons if c['significant']}
    lines, values = _grid_lines(groups, rows, baseline, first, second)
    logarithmic = bool(values) and values[0] > 0 and values[-1] / values[0] >= 10
    figure, (ax,) = panels(1, panel=(8, 4.6))
    handles, labels = [], []
    for index, ((value, points), colour) in enumerate(zip(lines, colours(len(lines)))):
        shift = index - (len(lines) - 1) / 2  # the lines side by side at each x, so their intervals stay apart
        if values and logarithmic:
            xs = [as_number(x) * 10 ** (0.012 * shift) for x, *_ in points]
        elif values:
            xs = [as_number(x) + 0.008 * shift * ((values[-1] - values[0]) or 1) for x, *_ in points]
        else:
            xs = [str(x) for x, *_ in points]
        handles.append(ax.errorbar(xs, [p[1] for p in points], yerr=[p[2] for p in points], marker='o', capsize=3,
                                   color=colour)[0])
        labels.append(f'{second} = {_value(value)}' if second else first)
        for x, (_, mean, _, label) in zip(xs, points):
            if label in significant:
                ax.plot(x, mean, marker='*', markersize=16, color=colour, zorder=4)
    base = next((r['best_values'] for r in rows if r['configuration'] == baseline), None)
    if base:
        handles.append(ax.axhline(np.mean(base), color='black', linestyle='--', linewidth=1))
        labels.append(f'{baseline} (mean of {len(base)} seeds)')
    if values:
        if logarithmic:
            ax.set_xscale('log')
        ax.set_xticks(values, [f'{v:g}' for v in values])
        ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.set(xlabel=first, ylabel='test accuracy at best val. epoch (%)')
    titled(figure, f'Ablation grid: mean and {CONFIDENCE:.0%} t-interval over seeds; star: significantly above '
                   f'{baseline} ({TEST}, Holm over {len(comparisons)} comparisons)', protocol)
    legend_below(figure, handles, labels)
    save(figure, path)


def across_protocols(across, pooled, baseline, path):
    """The forest plot across protocols: per configuration and protocol, the mean paired difference with its interval
    (left) and P(A>B) with its bootstrap interval (right), then the pooled P(A>B) (a diamond)."""
    rows = [(label, table, c) for label, entries in across.items() for table, c in entries]
    figure, (left, right) = panels(2, panel=(5.6, 0.9 + 0.42 * (len(rows) + len(across))))
    y, ticks, labels = 0, [], []
    for colour, (label, entries) in zip(colours(len(across)), across.items()):
        for table, c in entries:
            left.errorbar(c['mean_difference'], y, xerr=[[c['mean_difference'] - c['ci95_low']],
                                                         [c['ci95_high'] - c['mean_difference']]],
                          fmt='o', color=colour, capsize=3)
            right.errorbar(c['prob_improvement'], y, xerr=[[c['prob_improvement'] - c['prob_improvement_ci95_low']],
                                                           [c['prob_improvement_ci95_high'] - c['prob_improvement']]],
                           fmt='o', color=colour, capsize=3)
            ticks.append(y), labels.append(f"{label} in {table['id']}{' *' if c['significant'] else ''}")
            y += 1
        total = pooled(entries)
        right.errorbar(total['prob_improvement'], y, xerr=[[total['prob_improvement'] -
                                                            total['prob_improvement_ci95_low']],
                                                           [total['prob_improvement_ci95_high'] -
                                                            total['prob_improvement']]],
                       fmt='D', color='black', markersize=7, capsize=4)
        ticks.append(y), labels.append(f'{label}: {len(entries)} pooled')
        y += 1
    left.axvline(0, color='tab:red', linewidth=0.8)
    right.axvline(0.5, color='tab:red', linewidth=0.8)
    right.axvline(0.75, color='grey', linestyle=':', linewidth=1)
    for ax in (left, right):
        ax.set_yticks(ticks, labels if ax is left else [''] * len(ticks))
        ax.set_ylim(y - 0.5, -0.5)
        ax.grid(axis='x', alpha=0.3)
    left.set(xlabel=f'configuration - {baseline} (points, best val. epoch)')
    right.set(xlabel=f'P(A>B): share of seeds where it beats {baseline}', xlim=(-0.02, 1.02))
    protocols = {table['id']: table['line'] for _, table, _ in rows}
    titled(figure, f'Across protocols, each against its own protocol\'s {baseline} (* significantly greater: '
                   f'one-sided paired t-test, after Holm in its table)',
           '\n'.join(f'{number}: {line}' for number, line in protocols.items()))
    legend_below(figure, [Line2D([], [], color='grey', marker='o'), Line2D([], [], color='black', marker='D',
                                                                               linestyle=''),
                          Line2D([], [], color='grey', linestyle=':')],
                 [f'one protocol ({CONFIDENCE:.0%} interval)', 'pooled: stratified bootstrap',
                  '0.75 (Bouthillier et al.\'s threshold)'])
    save(figure, path)


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
    'xhat': f'the largest |x_hat| and the share of |x_hat| above {XHAT_THRESHOLD:g}, layer by layer, after the first '
            'and the last epoch (the paper\'s second observation).',
}
FIGURES = tuple(f'{stem}.png' for stem in STEMS)


def write_plots(groups, rows, comparisons, baseline, out, suffix='', protocol=''):
    """Write the figures that the data allows, each named {stem}{suffix}.png and titled with ``protocol``; returns
    {figure: why it was not made} for the others (a grid figure only where the configurations form a grid)."""
    not_made, name = {}, lambda stem: os.path.join(out, f'{stem}{suffix}.png')  # noqa: E731
    jobs, paired = [], [c for c in comparisons if c['paired_seeds']]
    if paired:
        jobs += [(paired_accuracies, (groups, paired, baseline, name('paired_accuracies'), protocol)),
                 (differences, (paired, baseline, name('differences'), protocol))]
    else:
        for stem in ('paired_accuracies', 'differences'):
            not_made[f'{stem}{suffix}.png'] = f'no seed has finished runs of both {baseline} and another configuration'
    axes = grid_axes(groups, baseline)
    if axes:
        jobs.append((grid, (groups, rows, comparisons, baseline, axes, name('grid'), protocol)))
    jobs += [(curves, (groups, name('curves'), protocol)), (scales_after_training, (groups, name('bn_scales'), protocol))]
    runs = norm_runs(groups)
    for stem, draw in (('gamma_distance', gamma_distance), ('xhat', xhat_by_layer)):
        if runs:
            jobs.append((_drawn, (draw, runs, protocol, name(stem))))
        else:
            not_made[f'{stem}{suffix}.png'] = 'no finished run recorded per-layer statistics (runs made with ' \
                                               '--no_norm_statistics or by an older train.py)'
    problem = draw_all(jobs)[[function for function, _ in jobs].index(scales_after_training)]
    if problem:
        not_made[f'bn_scales{suffix}.png'] = problem
    return not_made


def _drawn(draw, runs, protocol, path):
    save(draw(runs, protocol), path)


def _job(job):
    function, arguments = job
    return function(*arguments)


def draw_all(jobs):
    """Run the figure jobs [(function, arguments)] and return their results in order: on two cores where this
    process may use two and has not imported PyTorch (a fork of a process whose OpenMP threads have run can hang),
    as each figure is its own work; else one after another."""
    if len(jobs) < 2 or 'torch' in sys.modules or usable_cores() < 2 or sys.platform != 'linux':
        return [_job(job) for job in jobs]
    with multiprocessing.get_context('fork').Pool(2) as pool:
        return pool.map(_job, jobs, chunksize=1)
