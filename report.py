"""Turn train.py result files into the paper's table: paired seeds, one-sided paired t-tests, plots.

    python report.py training/fashionmnist/results --out report/

Reads every train.py results JSON under the given files or folders (from a sweep,
or copied from anywhere), groups runs by configuration (the run name without its
'_seed<N>' suffix, as sweep.py names them) and pairs configurations by seed.
Writes report.md and report.csv: per configuration the mean +- std of the test
accuracy at the best-validation epoch and at the final epoch; per comparison
with the baseline the mean paired difference and the one- and two-sided paired
t-test p-values (t_test.evaluate), at the best-validation and at the final
epoch, marked when the one-sided p <= 0.05. Seeds without a partner and
unfinished runs are named, never dropped silently. Plots (PNG): paired
accuracies per seed, mean training/validation curves with spread, and the
distribution of every BN scale after training against its initial value.
"""
import csv
import os
import sys

import numpy as np

from revisiting_bn.cli import OneLineParser, exit_on_error
from revisiting_bn.results import ResultsError, group_runs, has_best, is_finished, load_runs
from revisiting_bn.t_test import SIGNIFICANCE, evaluate, format_p

__all__ = ['summarize', 'compare', 'write_report', 'main']


def _mean_std(values):
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def normalisation(config):
    """The normalisation and what is trained, e.g. 'bn', 'none', 'mabn (real batch 32)', 'bn, BN only' (older
    results: bn)."""
    norm = config.get('norm', 'bn')
    parts = [norm + (f" (real batch {config.get('mabn_real_batch')})" if norm == 'mabn' else '')]
    parts += ['BN only'] if config.get('train_only_bn') else []
    parts += [] if config.get('bn_affine', True) else ['no affine']
    parts += [] if config.get('bn_running_stats', True) else ['batch statistics']
    return ', '.join(parts)


def arithmetic(config):
    """How a run computed: 'fp32 eager', 'bf16 channels_last graph', ... (older results: fp32 eager)."""
    return ' '.join([config.get('precision', 'fp32')] + (['channels_last'] if config.get('channels_last') else [])
                    + ['graph' if config.get('cuda_graph') else 'eager'])


def summarize(groups):
    rows = []
    for label, seeds in groups.items():
        finished = {s: r for s, r in sorted(seeds.items()) if is_finished(r['record']) and has_best(r['record'])}
        config = next(iter(seeds.values()))['record']['config']
        best = [r['record']['test_accuracy_at_best'] for r in finished.values()]
        final = [r['record']['final_test_accuracy'] for r in finished.values()]
        rows.append({'configuration': label, 'bn_weight': config['bn_weight'], 'c': config['c'],
                     'arithmetic': arithmetic(config), 'normalisation': normalisation(config),
                     'batch_size': config['batch_size'],
                     'input_norm': config['input_norm'], 'dataset': config['dataset'], 'network': config['network'],
                     'num_epochs': config['num_epochs'], 'seeds': list(finished),
                     'unfinished_seeds': sorted(s for s, r in seeds.items() if not is_finished(r['record'])),
                     'no_best_seeds': sorted(s for s, r in seeds.items() if is_finished(r['record'])
                                             and not has_best(r['record'])),
                     'best': _mean_std(best), 'final': _mean_std(final)})
    return rows


# The two test accuracies a run reports, as named in its results JSON and in the tables.
METRICS = {'test_accuracy_at_best': 'best val. epoch', 'final_test_accuracy': 'final epoch'}


def _paired_test(ours, theirs):
    """Per-seed and mean paired differences and one-/two-sided paired t-test p-values of two seed-aligned lists."""
    differences = [a - b for a, b in zip(ours, theirs)]
    test = {'differences': differences, 'mean_difference': float(np.mean(differences)) if differences else None,
            'p_value': None, 'p_value_two_sided': None, 'note': ''}
    try:
        test['p_value'], test['p_value_two_sided'] = evaluate(ours, theirs), evaluate(ours, theirs, 'two-sided')
    except ValueError as error:
        test['note'] = str(error)
    test['significant'] = test['p_value'] is not None and test['p_value'] <= SIGNIFICANCE
    return test


def compare(groups, baseline):
    """Each configuration against ``baseline``, paired by seed over finished runs, at the best-validation epoch
    (the paper's measure: the top-level keys) and at the final epoch (under 'final')."""
    if baseline not in groups:
        return []
    done = {label: {s: r['record'] for s, r in seeds.items() if is_finished(r['record']) and has_best(r['record'])}
            for label, seeds in groups.items()}
    comparisons = []
    for label in groups:
        if label == baseline:
            continue
        paired = sorted(set(done[label]) & set(done[baseline]))
        tests = {metric: _paired_test([done[label][s][metric] for s in paired],
                                      [done[baseline][s][metric] for s in paired]) for metric in METRICS}
        comparisons.append({
            'configuration': label, 'baseline': baseline, 'paired_seeds': paired,
            'only_in_configuration': sorted(set(done[label]) - set(done[baseline])),
            'only_in_baseline': sorted(set(done[baseline]) - set(done[label])),
            **tests['test_accuracy_at_best'], 'final': tests['final_test_accuracy']})
    return comparisons


def _pm(pair):
    return 'n/a' if pair[0] is None else f'{pair[0]:.2f} ± {pair[1]:.2f}'


def _seed_list(seeds):
    return ', '.join(map(str, seeds)) or 'none'


def markdown(rows, comparisons, baseline, left_out=()):
    lines = ['| configuration | dataset | network | epochs | batch | normalisation | bn_weight | c | input_norm | '
             'arithmetic | seeds | test acc. at best val. (%) | final test acc. (%) |', '|' + '---|' * 13]
    for r in rows:
        lines.append(f"| {r['configuration']} | {r['dataset']} | {r['network']} | {r['num_epochs']} | "
                     f"{r['batch_size']} | {r['normalisation']} | {r['bn_weight']:g} | {r['c']:g} | "
                     f"{r['input_norm']} | {r['arithmetic']} | {len(r['seeds'])} | {_pm(r['best'])} | "
                     f"{_pm(r['final'])} |")
    if comparisons:
        lines += ['', f'One-sided paired t-test over seeds (configuration > {baseline}) of the test accuracy at the '
                      f'best-validation epoch (the paper\'s measure) and at the final epoch; * marks p <= '
                      f'{SIGNIFICANCE}. The two-sided p-value asks whether the two differ at all (for settings that '
                      f'should not matter, such as the arithmetic).', '',
                  '| comparison | test accuracy at | paired seeds | mean paired difference (points) | p-value | '
                  'significant | two-sided p-value |', '|---|---|---|---|---|---|---|']
        for c in comparisons:
            for metric, test in zip(METRICS.values(), (c, c['final'])):
                p = format_p(test['p_value']) + (' *' if test['significant'] else '')
                p2 = format_p(test['p_value_two_sided'])
                diff = 'n/a' if test['mean_difference'] is None else f"{test['mean_difference']:+.2f}"
                lines.append(f"| {c['configuration']} vs {baseline} | {metric} | {len(c['paired_seeds'])} | {diff} | "
                             f"{p} | {'yes' if test['significant'] else 'no'} | {p2} |")
    elif baseline in [r['configuration'] for r in rows]:
        lines += ['', f'No comparison: there are results of {baseline!r} only, no other configuration to test.']
    elif baseline:
        lines += ['', f'No comparison: there are no results named {baseline!r} (choose one with --baseline).']
    notes = list(left_out)
    for r in rows:
        if r['unfinished_seeds']:
            notes.append(f"{r['configuration']}: unfinished runs (left out) for seeds "
                         f"{_seed_list(r['unfinished_seeds'])}")
        if r['no_best_seeds']:
            notes.append(f"{r['configuration']}: finished without a best epoch (validation accuracy never above 0%), "
                         f"left out: seeds {_seed_list(r['no_best_seeds'])}")
    for c in comparisons:
        if c['only_in_configuration']:
            notes.append(f"{c['configuration']}: seeds without a {baseline} partner (left out of the test): "
                         f"{_seed_list(c['only_in_configuration'])}")
        if c['only_in_baseline']:
            notes.append(f"{baseline}: seeds without a {c['configuration']} partner (left out of the test): "
                         f"{_seed_list(c['only_in_baseline'])}")
        if c['note']:
            notes.append(f"{c['configuration']} vs {baseline}: no p-value: {c['note']}")
    if notes:
        lines += ['', 'Notes:', ''] + [f'- {note}' for note in notes]
    return '\n'.join(lines) + '\n'


def write_csv(path, rows, comparisons):
    by_label = {c['configuration']: c for c in comparisons}
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['configuration', 'dataset', 'network', 'num_epochs', 'batch_size', 'normalisation',
                         'bn_weight', 'c', 'input_norm', 'arithmetic', 'n_seeds', 'seeds', 'unfinished_seeds',
                         'best_test_mean', 'best_test_std',
                         'final_test_mean', 'final_test_std', 'baseline', 'paired_seeds', 'mean_paired_difference',
                         'p_value', 'significant', 'p_value_two_sided', 'final_mean_paired_difference',
                         'final_p_value', 'final_significant', 'final_p_value_two_sided', 'unpaired_seeds'])
        for r in rows:
            c = by_label.get(r['configuration'], {})
            unpaired = c.get('only_in_configuration', []) + c.get('only_in_baseline', [])
            writer.writerow([r['configuration'], r['dataset'], r['network'], r['num_epochs'], r['batch_size'],
                             r['normalisation'], r['bn_weight'], r['c'], r['input_norm'], r['arithmetic'],
                             len(r['seeds']), ' '.join(map(str, r['seeds'])),
                             ' '.join(map(str, r['unfinished_seeds'])), *r['best'], *r['final'],
                             c.get('baseline', ''), ' '.join(map(str, c.get('paired_seeds', []))),
                             c.get('mean_difference', ''), c.get('p_value', ''), c.get('significant', ''),
                             c.get('p_value_two_sided', ''), *[c.get('final', {}).get(key, '') for key in (
                                 'mean_difference', 'p_value', 'significant', 'p_value_two_sided')],
                             ' '.join(map(str, sorted(set(unpaired))))])


def write_report(groups, out, baseline='baseline', plots=True, left_out=()):
    """Write report.md, report.csv and (optionally) the plots into ``out``, after removing the figures of an
    earlier report there; returns the Markdown and {figure: why it was not made}."""
    from revisiting_bn import report_figures
    os.makedirs(out, exist_ok=True)
    for figure in report_figures.FIGURES:  # never a stale figure beside a new report
        if os.path.exists(os.path.join(out, figure)):
            os.remove(os.path.join(out, figure))
    rows, comparisons = summarize(groups), compare(groups, baseline)
    not_made = report_figures.write_plots(groups, comparisons, baseline, out) if plots else {}
    text = markdown(rows, comparisons, baseline, list(left_out) + [f'figure {figure} not made: {why}'
                                                                   for figure, why in not_made.items()])
    with open(os.path.join(out, 'report.md'), 'w') as f:
        f.write(text)
    write_csv(os.path.join(out, 'report.csv'), rows, comparisons)
    return text, not_made


def main(argv=None):
    p = OneLineParser(prog='report.py', description=__doc__.split('\n\n')[0])
    p.add_argument('results', nargs='+', help='result JSON files, folders searched recursively, or glob patterns')
    p.add_argument('--baseline', default='baseline', help='configuration the others are tested against')
    p.add_argument('--out', default='report', help='folder for report.md, report.csv and the plots')
    p.add_argument('--no_plots', action='store_true', help='write the tables only')
    p.add_argument('--skip_unreadable', action='store_true',
                   help='leave out results files that cannot be read (named in report.md) instead of refusing')
    args = p.parse_args(argv)
    try:
        runs = load_runs(args.results, args.skip_unreadable)
        groups = group_runs(runs)
        if args.baseline not in groups:
            p.error(f'--baseline {args.baseline}: no results of that configuration (found: {", ".join(groups)})')
        left_out = [f'left out, unreadable (--skip_unreadable): {file}' for file in runs.unreadable]
        text, not_made = write_report(groups, args.out, args.baseline, not args.no_plots, left_out)
    except (ResultsError, OSError) as error:
        print(f'report.py: error: {error}', file=sys.stderr)
        return 1
    print(text, end='')
    print(f'written to {os.path.join(args.out, "report.md")} and report.csv'
          f'{"" if args.no_plots else " with the plots" + ("" if not not_made else " that the results allow")}')
    for figure, why in not_made.items():
        print(f'{figure} not made: {why}')
    return 0


if __name__ == '__main__':
    with exit_on_error('report.py'):
        sys.exit(main())
