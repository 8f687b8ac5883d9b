"""The report's figures (PNG, matplotlib): paired accuracies, training curves, BN scales after training.

The last one shows the paper's observation: the learned BN scales stay close to
their initial value, so the initial value chosen for them matters. It is drawn from the
gammas in the results JSON (the per-layer statistics, norm_figures.py draws the
rest of them), or, for runs recorded without them, from the best weights.
"""
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .cli import plural  # noqa: E402
from .norm_figures import final_gammas, gamma_distance, norm_runs, xhat_by_layer  # noqa: E402
from .protocol import INPUT_BN, resolve_bn_weight  # noqa: E402
from .results import is_finished  # noqa: E402
from .runs import run_files  # noqa: E402
from .t_test import format_p  # noqa: E402

__all__ = ['write_plots', 'best_weights_file', 'bn_scales']


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
    for label, seeds in groups.items():
        finished = [r['record']['epochs'] for r in seeds.values() if is_finished(r['record'])]
        if not finished:
            continue
        length = min(len(e) for e in finished)
        epochs = np.arange(1, length + 1)
        for ax, (key, title) in zip(axes, keys):
            values = np.array([[row[key] for row in e[:length]] for e in finished])
            mean, std = values.mean(0), values.std(0)
            ax.plot(epochs, mean, label=f'{label} (n={len(finished)})', marker='o' if length <= 30 else None,
                    markersize=3)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
            ax.set(xlabel='epoch', title=f'{title}, mean ± std over seeds')
    axes[0].legend()
    _save(fig, path)


def scales_after_training(groups, path):
    panels, found = [], 0
    for label, seeds in groups.items():
        inputs, others = [], []
        for run in seeds.values():
            recorded = run['record'].get('norm_statistics')
            weights = None if recorded else best_weights_file(run)
            found += bool(recorded or weights)
            if (recorded or weights) and is_finished(run['record']):
                input_scales, scales = final_gammas(recorded) if recorded else bn_scales(_load_weights(weights))
                inputs.append(input_scales)
                others.append(scales)
        if others and sum(s.size for s in others):  # a network without normalisation layers has no panel
            initial = resolve_bn_weight(next(iter(seeds.values()))['record']['config']['bn_weight'])
            panels.append((label, initial, np.concatenate(others), np.concatenate(inputs), len(others)))
    if not panels:
        return ('no gammas recorded in the results and no best weights found: the results name none that exists, and '
                'there is no networks/ folder beside results/ (weights are not kept with copied or committed results)'
                if not found else
                'no finished run has normalisation layers with a scale')
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (label, initial, scales, input_scales, n) in zip(axes[0], panels):
        # Bins around the data and the initial value: with lr/c the scales barely move.
        low, high = min(scales.min(), initial), max(scales.max(), initial)
        pad = max(high - low, 0.01 * initial) * 0.1
        ax.hist(scales, bins=np.linspace(low - pad, high + pad, 61), color='tab:blue', alpha=0.8)
        ax.axvline(initial, color='black', linestyle='--', label=f'initial value {initial:g}')
        ax.set(xlabel='BN scale (gamma) after training (the last epoch, or the best weights of runs without '
                      'per-layer statistics)', ylabel='count',
               title=f'{label}\n{plural(scales.size // max(n, 1), "scale")} x {plural(n, "seed")} (input BN not shown)')
        ax.legend()
    _save(fig, path)
    return None


FIGURES = ('paired_accuracies.png', 'curves.png', 'bn_scales.png', 'gamma_distance.png', 'xhat.png')


def write_plots(groups, comparisons, baseline, out):
    """Write the figures (FIGURES) that the data allows; returns {figure: why it was not made} for the others."""
    not_made = {}
    if comparisons and any(c['paired_seeds'] for c in comparisons):
        paired_accuracies(groups, [c for c in comparisons if c['paired_seeds']], baseline,
                          os.path.join(out, 'paired_accuracies.png'))
    else:
        not_made['paired_accuracies.png'] = f'no seed has finished runs of both {baseline} and another configuration'
    curves(groups, os.path.join(out, 'curves.png'))
    problem = scales_after_training(groups, os.path.join(out, 'bn_scales.png'))
    if problem:
        not_made['bn_scales.png'] = problem
    runs = norm_runs(groups)
    for figure, draw in (('gamma_distance.png', gamma_distance), ('xhat.png', xhat_by_layer)):
        if runs:
            _save(draw(runs), os.path.join(out, figure))
        else:
            not_made[figure] = 'no finished run recorded per-layer statistics (runs made with --no_norm_statistics ' \
                               'or by an older train.py)'
    return not_made
