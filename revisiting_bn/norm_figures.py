"""The report's figures of the paper's two observations, drawn from the per-layer statistics in the results JSON.

gamma_distance.png: gamma's mean absolute distance from its initial value over the epochs, for
the early, middle and late thirds of the normalisation layers (the input BN apart); xhat.png: the
largest |x_hat| and the share of |x_hat| above the threshold, layer by layer, after the first and
the last epoch. Configurations side by side: the mean over seeds, a band from the lowest to the
highest seed. (norm_statistics.py says what is measured and how.)
"""
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .protocol import INPUT_BN, INPUT_BN_LAYER  # noqa: E402
from .results import is_finished  # noqa: E402

__all__ = ['spans_orders', 'norm_runs', 'final_gammas', 'gamma_distance', 'xhat_by_layer']


def spans_orders(values, factor=100.0):
    """Whether positive ``values`` span more than ``factor`` (a log scale then shows every curve)."""
    values = np.asarray([v for v in np.ravel(values) if np.isfinite(v)], dtype=float)
    return values.size > 1 and values.min() > 0 and values.max() / values.min() > factor

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


def _band(ax, x, values, label, **style):
    values = np.asarray(values, dtype=float)
    line, = ax.plot(x, values.mean(0), label=f'{label} (n={len(values)})', **style)
    if len(values) > 1:
        ax.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)


TITLES = {1: ('all',), 2: ('early', 'late'), 3: ('early', 'middle', 'late')}


def _parts(layers, count):
    """The layers (the input BN apart) in ``count`` parts of nearly equal size, in network order."""
    body = [name for name in layers if not is_input_bn(name)]
    return [[body[i] for i in part] for part in np.array_split(np.arange(len(body)), count)]


def _panels(count, width):
    figure, axes = plt.subplots(1, count, figsize=(width * count, 4), squeeze=False)
    return figure, axes[0]


def gamma_distance(runs):
    """The figure: a panel per third of the layers (fewer for networks of one or two), mean |gamma - initial gamma|
    by epoch."""
    count = min(3, max(len([n for n in stats[0]['layers'] if not is_input_bn(n)]) for stats in runs.values()))
    figure, axes = _panels(count, 5)
    for index, (ax, title) in enumerate(zip(axes, TITLES[count])):
        for label, stats in runs.items():
            names = _parts(stats[0]['layers'], count)[index]
            length = min(len(s['epochs']) for s in stats)
            epochs = [e['epoch'] for e in stats[0]['epochs'][:length]]
            values = [[np.mean([e['layers'][n]['gamma_distance'] for n in names
                                if e['layers'].get(n, {}).get('gamma_distance') is not None] or [np.nan])
                       for e in s['epochs'][:length]] for s in stats]
            _band(ax, epochs, values, f'{label}, {len(names)} layer{"s" if len(names) != 1 else ""}',
                  marker='o' if length <= 30 else None, markersize=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel='epoch', ylabel='mean |gamma - initial gamma|',
               title=f'{title} {"layers" if count > 1 else "normalisation layers"} (input BN apart)')
        ax.set_xlim(left=0)
        ax.legend()
    return figure


def xhat_by_layer(runs):
    """The figure: two panels, the largest |x_hat| and the share of |x_hat| above the threshold, by layer, after the
    first and after the last epoch."""
    figure, axes = _panels(2, 7)
    threshold = next(iter(runs.values()))[0]['threshold']
    for ax, key, title in ((axes[0], 'xhat_max_abs', 'largest |x_hat|'),
                           (axes[1], 'xhat_share_above', f'share of |x_hat| > {threshold:g}')):
        for label, stats in runs.items():
            layers = stats[0]['layers']
            depth = np.arange(len(layers)) + (0 if any(map(is_input_bn, layers)) else 1)  # 0: the input BN
            for position, style in ((1, {'linestyle': '--', 'marker': 'x'}), (-1, {'marker': 'o'})):
                rows = [s['epochs'][min(position, len(s['epochs']) - 1)] for s in stats]  # epoch 1, and the last
                values = [[row['layers'][n][key] for n in layers] for row in rows]
                _band(ax, depth, values, f'{label}, epoch {rows[0]["epoch"]}', markersize=3, **style)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        logarithmic = key == 'xhat_max_abs' and spans_orders([v for line in ax.get_lines() for v in line.get_ydata()])
        if logarithmic:
            ax.set_yscale('log')
        ax.set(xlabel='normalisation layer, in network order (0: the input BN)', ylabel=title,
               title=f'{title}, by layer{" (log scale)" if logarithmic else ""}')
        ax.legend(fontsize='small')
    return figure
