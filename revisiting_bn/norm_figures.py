"""The report's figures of the paper's two observations, drawn from the per-layer statistics in the results JSON.

gamma_distance.png: gamma's mean absolute distance from its initial value over the epochs, for
the early, middle and late thirds of the normalisation layers (the input BN apart); xhat.png: the
largest |x_hat| and the share of |x_hat| above the threshold, layer by layer, after the first and
the last epoch. Each configuration in a colour of its own: the mean over seeds, a band from the
lowest to the highest seed. (norm_statistics.py says what is measured and how.)
"""
import numpy as np
from matplotlib.lines import Line2D

from .figure_style import colours, epoch_axis, legend_below, panels, spans_orders, titled
from .protocol import INPUT_BN, INPUT_BN_LAYER
from .results import is_finished

__all__ = ['norm_runs', 'final_gammas', 'gamma_distance', 'xhat_by_layer']


def stable_names(stats):
    """A run's statistics with every layer under its name inside the network: records made before the names were
    stable called the input BN '0' and the network's layers '1.<name>'; newer ones are returned as they are."""
    if INPUT_BN not in stats.get('layers', ()):
        return stats
    rename = lambda name: INPUT_BN_LAYER if name == INPUT_BN else name[2:] if name.startswith('1.') else name  # noqa
    return {**stats, 'layers': [rename(n) for n in stats['layers']],
            'epochs': [{**e, 'layers': {rename(n): v for n, v in e['layers'].items()}} for e in stats['epochs']],
            'gamma': {rename(n): v for n, v in stats.get('gamma', {}).items()}}


def norm_runs(groups):
    """{configuration: [norm_statistics of each finished seed]}, for the configurations whose runs have them, the
    layers under their stable names (stable_names)."""
    found = {}
    for label, seeds in groups.items():
        stats = [stable_names(run['record']['norm_statistics']) for run in seeds.values()
                 if is_finished(run['record']) and run['record'].get('norm_statistics')]
        if stats:
            found[label] = stats
    return found


def is_input_bn(name):
    return name == INPUT_BN_LAYER


def final_gammas(run_stats):
    """(input-BN gammas, every other layer's gammas) after the last epoch, from one run's statistics."""
    run_stats = stable_names(run_stats)
    gammas = run_stats.get('gamma', {})
    inputs = [v for name, values in gammas.items() if is_input_bn(name) for v in values]
    others = [v for name, values in gammas.items() if not is_input_bn(name) for v in values]
    return np.asarray(inputs, dtype=float), np.asarray(others, dtype=float)


def _band(ax, x, values, colour, **style):
    values = np.asarray(values, dtype=float)
    line, = ax.plot(x, values.mean(0), color=colour, **style)
    if len(values) > 1:
        ax.fill_between(x, values.min(0), values.max(0), color=colour, alpha=0.15, linewidth=0)
    return line


TITLES = {1: ('all',), 2: ('early', 'late'), 3: ('early', 'middle', 'late')}


def _parts(layers, count):
    """The layers (the input BN apart) in ``count`` parts of nearly equal size, in network order."""
    body = [name for name in layers if not is_input_bn(name)]
    return [[body[i] for i in part] for part in np.array_split(np.arange(len(body)), count)]


def _labels(runs):
    return [f'{label} (n={len(stats)})' for label, stats in runs.items()]


def gamma_distance(runs, protocol=''):
    """The figure: a panel per third of the layers (fewer for networks of one or two), mean |gamma - initial gamma|
    by epoch, the panels on one scale."""
    count = min(3, max(len([n for n in stats[0]['layers'] if not is_input_bn(n)]) for stats in runs.values()))
    figure, axes = panels(count, sharey=True)
    handles, palette, epochs_seen = [], colours(len(runs)), set()
    for index, (ax, title) in enumerate(zip(axes, TITLES[count])):
        for colour, (label, stats) in zip(palette, runs.items()):
            names = _parts(stats[0]['layers'], count)[index]
            length = min(len(s['epochs']) for s in stats)
            epochs = [e['epoch'] for e in stats[0]['epochs'][:length]]
            epochs_seen.update(epochs)
            values = [[np.mean([e['layers'][n]['gamma_distance'] for n in names
                                if e['layers'].get(n, {}).get('gamma_distance') is not None] or [np.nan])
                       for e in s['epochs'][:length]] for s in stats]
            line = _band(ax, epochs, values, colour, marker='o' if length <= 30 else None, markersize=3)
            if index == 0:
                handles.append(line)
        epoch_axis(ax, epochs_seen)
        names = _parts(next(iter(runs.values()))[0]['layers'], count)[index]
        ax.set(ylabel='mean |gamma - initial gamma|' if index == 0 else None,
               title=f'{title} {"layers" if count > 1 else "normalisation layers"} ({len(names)}, input BN apart)')
        ax.grid(alpha=0.3)
    titled(figure, 'How far gamma moved from its start, by epoch (mean over seeds, band: lowest to highest)',
           protocol)
    legend_below(figure, handles, _labels(runs))
    return figure


def xhat_by_layer(runs, protocol=''):
    """The figure: two panels, the largest |x_hat| and the share of |x_hat| above the threshold, by layer, after the
    first epoch (dashed) and the last (solid); runs of one epoch have one line each."""
    figure, axes = panels(2, panel=(6.5, 3.8))
    threshold = next(iter(runs.values()))[0]['threshold']
    palette, firsts, lasts = colours(len(runs)), set(), set()
    for ax, key, title in ((axes[0], 'xhat_max_abs', 'largest |x_hat|'),
                           (axes[1], 'xhat_share_above', f'share of |x_hat| > {threshold:g}')):
        for colour, (label, stats) in zip(palette, runs.items()):
            layers = stats[0]['layers']
            depth = np.arange(len(layers)) + (0 if any(map(is_input_bn, layers)) else 1)  # 0: the input BN
            first, last = [[s['epochs'][min(i, len(s['epochs']) - 1)] for s in stats] for i in (1, -1)]
            moments = [(last, '-')] if first[0]['epoch'] == last[0]['epoch'] else [(first, '--'), (last, '-')]
            for rows, style in moments:
                (firsts if style == '--' else lasts).add(rows[0]['epoch'])
                _band(ax, depth, [[row['layers'][n][key] for n in layers] for row in rows], colour, linestyle=style,
                      marker='o', markersize=3)
        ax.set_xticks(depth)
        logarithmic = key == 'xhat_max_abs' and spans_orders([v for line in ax.get_lines() for v in line.get_ydata()])
        if logarithmic:
            ax.set_yscale('log')
        ax.set(xlabel='normalisation layer, in network order (0: the input BN)', ylabel=title,
               title=f'{title}, by layer{" (log scale)" if logarithmic else ""}')
        ax.grid(alpha=0.3)
    titled(figure, 'x_hat by layer (mean over seeds, band: lowest to highest)', protocol)
    handles = [Line2D([], [], color=colour) for colour in palette]
    labels = _labels(runs)
    for style, epochs in (('--', firsts), ('-', lasts)):
        if epochs:
            handles.append(Line2D([], [], color='black', linestyle=style))
            labels.append(f'after epoch {", ".join(map(str, sorted(epochs)))}')
    legend_below(figure, handles, labels)
    return figure
