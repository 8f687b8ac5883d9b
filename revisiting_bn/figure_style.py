"""How the report's figures look: a colour each, small multiples on shared axes, legends outside the data, titles.

Every figure of the report is drawn through these few helpers, so that at 2 configurations and at 15
(an ablation grid) alike: no colour stands for two things in one figure; panels come in rows of at
most MAX_COLUMNS, sharing their axes where the values are comparable; the legend sits below the data,
never over it; epochs are whole numbers (one epoch is one tick, not 0.95 ... 1.05); and the title
says what is shown and for which protocol (dataset, network, epochs, batch, seeds).
"""
import io
import math
import textwrap

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ['DPI', 'MAX_COLUMNS', 'MAX_WIDTH', 'PANEL', 'colours', 'panels', 'legend_below', 'epoch_axis', 'titled', 'save', 'spans_orders', 'warm_up']

DPI = 120
MAX_COLUMNS = 4
MAX_WIDTH = 19.0  # inches: 2280 pixels at DPI
PANEL = (4.4, 3.3)  # inches per small multiple


def colours(count):
    """``count`` colours no two alike: matplotlib's tab10 up to 10, tab20 up to 20, else spread over a colour map."""
    if count <= 10:
        return [plt.get_cmap('tab10')(i) for i in range(count)]
    if count <= 20:
        return [plt.get_cmap('tab20')(i) for i in range(count)]
    return [plt.get_cmap('turbo')(x) for x in np.linspace(0.05, 0.95, count)]


def panels(count, sharex=False, sharey=False, panel=PANEL, columns=MAX_COLUMNS):
    """A figure of ``count`` small multiples, at most ``columns`` to a row; returns it and its used axes in order."""
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(panel[0] * columns, panel[1] * rows + 0.9),
                                sharex=sharex, sharey=sharey, squeeze=False, layout='constrained')
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return figure, flat[:count]


def legend_below(figure, handles, labels, columns=None):
    """One legend for the whole figure, below its panels (outside the data), in as many columns as fit."""
    if not handles:
        return
    width, height = figure.get_size_inches()
    columns = columns or max(1, min(len(labels), int(width // 3.2)))
    figure.set_size_inches(width, height + 0.22 * math.ceil(len(labels) / columns) + 0.1)  # room below the panels
    figure.legend(handles, labels, loc='outside lower center', ncols=columns, fontsize='small', frameon=False)


def epoch_axis(ax, epochs):
    """Whole-number epoch ticks; a single epoch is one tick in the middle of the axis."""
    epochs = sorted({int(e) for e in epochs})
    if len(epochs) == 1:
        ax.set_xticks(epochs)
        ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('epoch')


def titled(figure, what, protocol):
    """The figure's title: what it shows (wrapped to the figure's width), then the protocol it shows it for."""
    width = max(40, int(figure.get_size_inches()[0] * 11))  # characters of the medium font across the figure
    lines = textwrap.wrap(what, width) + ([protocol] if protocol else [])
    figure.suptitle('\n'.join(lines), fontsize='medium')


def save(figure, path):
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def warm_up():
    """Draw and encode one small throwaway figure, so that matplotlib loads its fonts, text layout and PNG writer
    now and the first real figure does not wait for them (sweep.py does this while its runs' workers start)."""
    figure, (ax,) = panels(1)
    ax.plot([1, 2], [1, 2], label='a')
    epoch_axis(ax, [1, 2])
    titled(figure, 'warm-up', 'protocol')
    legend_below(figure, *ax.get_legend_handles_labels())
    figure.savefig(io.BytesIO(), format='png', dpi=DPI)
    plt.close(figure)


def spans_orders(values, factor=100.0):
    """Whether positive ``values`` span more than ``factor`` (a log scale then shows every curve)."""
    values = np.asarray([v for v in np.ravel(values) if np.isfinite(v)], dtype=float)
    return values.size > 1 and values.min() > 0 and values.max() / values.min() > factor
