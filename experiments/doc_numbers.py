"""The numbers the docs take from the committed results, written from those files, or checked against them.

    python experiments/doc_numbers.py            # check: exit 1, naming every block whose text the files no longer give
    python experiments/doc_numbers.py --write    # write every block from the files

A doc (README.md, docs/*.md, experiments/README.md) holds such numbers inside a block
``<!-- numbers: KIND ARGS -->`` ... ``<!-- /numbers -->`` whose text this script makes from the
committed files alone: a sweep's runs, budget and tables, the ablation's table, the vanishing-signal
surveys, the sources of variance, the cross-machine comparison, the split's effect. Prose around a
block says what it shows; tests/test_docs.py runs the check, so a number and its file cannot drift
apart.
"""
import argparse
import glob
import json
import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from revisiting_bn.cli import number_ranges, plural  # noqa: E402
from revisiting_bn.report_html import devices  # noqa: E402
from revisiting_bn.report_tables import protocol_tables, render_markdown, section_blocks  # noqa: E402
from revisiting_bn.results import load_runs  # noqa: E402
from revisiting_bn.t_test import format_p, paired_summary  # noqa: E402

EXPERIMENTS = os.path.join(ROOT, 'experiments')
BLOCK = re.compile(r'^(<!-- numbers: (.+?) -->\n)(.*?)(<!-- /numbers -->)', re.S | re.M)


def _table(header, rows):
    return render_markdown([('table', header, rows)]).rstrip('\n')


def _sweep(name, baseline='baseline'):
    """A committed sweep: its runs and budget, its settings and comparison tables, and its comparisons in words."""
    runs = load_runs([os.path.join(EXPERIMENTS, name)])
    (table,) = protocol_tables(runs, baseline)
    finished = [run for run in runs if run['record']['status'] == 'finished']
    hours = sum(run['record']['wall_time_s'] for run in runs) / 3600
    epochs = {run['record']['config']['num_epochs'] for run in runs}
    codes = sorted({str(run['record'].get('code_version'))[:7] + ('+changes' if '+changes' in
                                                                  str(run['record'].get('code_version')) else '')
                    for run in runs})
    line = (f"{plural(len(runs), 'run')} of {' and '.join(map(str, sorted(epochs)))} epochs, seeds "
            f"{number_ranges(run['seed'] for run in runs)}, {len(finished)} finished; training time summed over the "
            f"runs {hours:.2f} h; {devices(r['record'] for r in runs)}; code {', '.join(codes)}.")
    blocks = [block for block in section_blocks(table['rows'], table['comparisons'], baseline, groups=table['groups'])
              if block[0] != 'figures' and block[1:] != ('Figures:',)
              and not (block[0] == 'p' and block[1].startswith('Each configuration against'))]  # said once, above
    return line + '\n\n' + render_markdown(blocks).rstrip('\n')


def _ablation():
    runs = load_runs([os.path.join(EXPERIMENTS, 'ablation_mlp')])
    (table,) = protocol_tables(runs, 'baseline')
    tested = {c['configuration']: c for c in table['comparisons']}
    rows = []
    for r in table['rows']:
        c = tested.get(r['configuration'])
        cells = [''] * 9 if c is None else [
            f"{c['mean_difference']:+.2f}", f"[{c['ci95_low']:+.2f}, {c['ci95_high']:+.2f}]",
            f"{c['effect_size_dz']:+.2f}", f"{c['prob_improvement']:.2f}", format_p(c['p_value']),
            format_p(c['p_holm']) + (' *' if c['significant'] else ''), format_p(c['wilcoxon_p']),
            format_p(c['p_value_two_sided']), f"{c['min_detectable_difference']:.2f}"]
        rows.append([r['configuration'], f"{r['best'][0]:.2f} ± {r['best'][1]:.2f}", *cells])
    return _table(['configuration', 'test acc. at best val. (%)', 'difference (points)', '95% interval', 'd_z',
                   'P(A>B)', 'p', 'Holm p', 'Wilcoxon p', 'two-sided p', 'smallest detectable gain'], rows)


def _survey(zoo):
    with open(os.path.join(EXPERIMENTS, 'vanishing_signal', f"measurements{'_timm' if zoo == 'timm' else ''}.json")) as f:
        return json.load(f)


def _vanishing(zoo):
    measured = _survey(zoo)
    networks = measured['networks']
    with_bn = {name: row for name, row in networks.items() if 'at_bn_weight' in row}
    warned = sorted(name for name, row in with_bn.items() if row.get('train_py_warns'))
    small = {name: row for name, row in with_bn.items() if max(row['at_bn_weight']['eps']) >= 1e-3}
    rows = [[name.split(':')[-1], ', '.join(f'{eps:g}' for eps in row['at_bn_weight']['eps']),
             f"{row['at_bn_weight']['vanished']} of {row['at_bn_weight']['layers']}", row['at_1']['vanished'],
             row['small_eps']['vanished'], f"{row['at_bn_weight']['logits_std']:.1e} ({row['at_1']['logits_std']:.1e})",
             'yes' if row.get('train_py_warns') else 'no', row['image_size']]
            for name, row in sorted(with_bn.items()) if row['at_bn_weight']['vanished']]
    sizes = sorted({row['image_size'] for row in with_bn.values()})
    without = sum('no batch norm' in row.get('skipped', '') for row in networks.values())
    unmeasured = len(networks) - len(with_bn) - without
    line = (f"{len(networks)} networks: {len(with_bn)} with batch norm measured"
            + (f', {without} without batch norm' if without else '')
            + (f', {unmeasured} with it that cannot take these sizes' if unmeasured else '')
            + f"; images of {' or '.join(map(str, sizes))} pixels. {len(rows)} have a "
            f"layer whose x̂ RMS is under {measured['threshold_xhat_rms']:g} at γ {measured['bn_weight']:g}; "
            f"train.py warns for {len(warned)}" + (f" ({', '.join(name.split(':')[-1] for name in warned)})"
                                                   if warned else '') +
            f"; {len(small)} have BN eps 1e-3 or more" +
            (f" ({len([n for n in small if n in warned])} of them warned)" if small else '') + '.')
    return line + '\n\n' + _table(['network', 'BN eps', 'layers under 0.5 at γ 0.1', 'at γ 1', 'at γ 0.1, eps 1e-5',
                                   'logits std at γ 0.1 (γ 1)', 'train.py warns', 'image size'], rows)


def _warned(zoo):
    """In one sentence: the networks train.py warns about, their BN eps, and those with a large eps it spares."""
    with_bn = {name.split(':')[-1]: row for name, row in _survey(zoo)['networks'].items() if 'at_bn_weight' in row}
    warned = sorted(name for name, row in with_bn.items() if row.get('train_py_warns'))
    eps = sorted({e for name in warned for e in with_bn[name]['at_bn_weight']['eps']})
    spared = sorted(name for name, row in with_bn.items()
                    if name not in warned and max(row['at_bn_weight']['eps']) >= 1e-3)
    line = (f"it warns about {len(warned)} of the {len(with_bn)} with batch norm ({', '.join(warned)}), whose BN eps "
            f"is {' or '.join(f'{e:g}' for e in eps)}")
    if len(spared) > 3:  # too many to name: counted, with those that have a weak layer all the same
        weak = [name for name in spared if with_bn[name]['at_bn_weight']['vanished']]
        line += (f'; the {len(spared)} others with eps 1e-3 or more pass the signal on, ' +
                 (f"{len(weak)} of them with a layer under 0.5 ({', '.join(weak)})" if weak else
                  'none of them with a layer under 0.5'))
    elif spared:
        line += ('; of the others with eps 1e-3 or more, ' + ', '.join(
            f"{name} ({with_bn[name]['image_size']} pixels, {with_bn[name]['at_bn_weight']['vanished']} layers under "
            f"0.5)" for name in spared) + (' passes' if len(spared) == 1 else ' pass') + ' the signal on')
    return line + '.'


def _variance():
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    from variance_sources import table
    rows = [[r['configuration'], r['source'], r['runs'], f"{r['mean']:.2f}",
             f"{r['std']:.2f} [{r['std_ci95_low']:.2f}, {r['std_ci95_high']:.2f}]", f"{r['share_of_variance']:.0%}",
             f"{r['split_to_init_variance_ratio']:.2f}, p = {r['equal_variance_p']:.2f}"]
            for r in table(EXPERIMENTS)]
    return _table(['configuration', 'source of variance', 'runs', 'mean (%)', 'standard deviation [95% interval]',
                   'share of the variance', 'split / initialisation variance, F-test'], rows)


def _sentence(text):
    return text[:1].upper() + text[1:]


def _machines(seeds, first, *others):
    """The same runs made on several machines: each run's test accuracy at its best epoch on each, how far a run
    moved from ``first``, and each machine's verdict on proposed against baseline."""
    seeds = list(range(1, int(seeds) + 1))
    loaded = {sweep: load_runs([os.path.join(EXPERIMENTS, sweep)]) for sweep in (first, *others)}
    found = {sweep: {(run['label'], run['seed']): run['record'] for run in runs if run['seed'] in seeds}
             for sweep, runs in loaded.items()}
    rows = []
    for key in sorted(found[first]):
        cells = [f"{found[sweep][key]['test_accuracy_at_best']:.2f} (epoch {found[sweep][key]['best_epoch']})"
                 for sweep in found]
        moves = [f"{found[sweep][key]['test_accuracy_at_best'] - found[first][key]['test_accuracy_at_best']:+.2f}"
                 for sweep in others]
        rows.append([*key, *cells, *moves])
    lines = []
    for sweep in others:
        moved = [abs(found[sweep][k]['test_accuracy_at_best'] - found[first][k]['test_accuracy_at_best'])
                 for k in found[first]]
        epochs = sum(found[sweep][k]['best_epoch'] != found[first][k]['best_epoch'] for k in found[first])
        lines.append(f"from {first} to {sweep} a run's test accuracy moved by {np.mean(moved):.2f} points on average, "
                     f"by up to {max(moved):.2f}, and {epochs} of {len(moved)} runs chose another best epoch")
    spread = {label: np.std([run['record']['test_accuracy_at_best'] for run in loaded[first] if run['label'] == label],
                            ddof=1) for label in ('baseline', 'proposed')}
    verdicts = []
    for sweep, records in found.items():
        test = paired_summary([records[('proposed', s)]['test_accuracy_at_best'] for s in seeds],
                              [records[('baseline', s)]['test_accuracy_at_best'] for s in seeds])
        verdicts.append(f"- {sweep} ({devices(records.values())}): proposed − baseline "
                        f"{test['mean_difference']:+.2f} points, 95% interval [{test['ci95_low']:+.2f}, "
                        f"{test['ci95_high']:+.2f}], one-sided p = {format_p(test['p_value'])}")
    return (_table(['configuration', 'seed', *found, *(f'{sweep} − {first}' for sweep in others)], rows)
            + '\n\n' + _sentence('; '.join(lines)) + f". For scale, the standard deviation of the test accuracy over "
            f"all of {first}'s seeds is {spread['baseline']:.2f} points (baseline) and {spread['proposed']:.2f} "
            f"(proposed).\n\nThe verdict over seeds {number_ranges(seeds)}, machine by machine:\n\n" + '\n'.join(verdicts))


def _split():
    """The paper's pair with the split fixed against the same pair with the split drawn with each seed."""
    rows = []
    for sweep in ('mlp_paper', 'mlp_split'):
        (table,) = protocol_tables(load_runs([os.path.join(EXPERIMENTS, sweep)]), 'baseline')
        (c,) = table['comparisons']
        means = {r['configuration']: f"{r['best'][0]:.2f} ± {r['best'][1]:.2f}" for r in table['rows']}
        rows.append([sweep, 'fixed (seed 0)' if sweep == 'mlp_paper' else 'each seed\'s', means['baseline'],
                     means['proposed'], f"{c['mean_difference']:+.2f} [{c['ci95_low']:+.2f}, {c['ci95_high']:+.2f}]",
                     f"{c['prob_improvement']:.2f} [{c['prob_improvement_ci95_low']:.2f}, "
                     f"{c['prob_improvement_ci95_high']:.2f}]", format_p(c['p_value']),
                     format_p(c['p_value_two_sided']), f"{c['min_detectable_difference']:.2f}"])
    return _table(['sweep', 'validation split', 'baseline (%)', 'proposed (%)', 'proposed − baseline [95% interval]',
                   'P(A>B) [95% interval]', 'one-sided p', 'two-sided p', 'smallest detectable gain'], rows)


KINDS = {'sweep': _sweep, 'ablation': _ablation, 'vanishing': _vanishing, 'warned': _warned, 'variance': _variance,
         'machines': _machines, 'split': _split}


def docs():
    return [os.path.join(ROOT, 'README.md'), *sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md'))),
            os.path.join(EXPERIMENTS, 'README.md')]


def refresh(text):
    """``text`` with every block made again from the files; and the blocks that differed."""
    differing = []

    def made(match):
        kind, *arguments = match.group(2).split()
        if kind not in KINDS:
            raise SystemExit(f"doc_numbers.py: no kind of numbers called {kind!r} (known: {', '.join(KINDS)})")
        body = KINDS[kind](*arguments) + '\n'
        if body != match.group(3):
            differing.append(match.group(2))
        return match.group(1) + body + match.group(4)
    return BLOCK.sub(made, text), differing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--write', action='store_true', help='write every block from the files')
    args = parser.parse_args(argv)
    stale = []
    for path in docs():
        with open(path) as f:
            text = f.read()
        new, differing = refresh(text)
        stale += [f'{os.path.relpath(path, ROOT)}: {block}' for block in differing]
        if args.write and new != text:
            with open(path, 'w') as f:
                f.write(new)
    if stale and not args.write:
        print('numbers that the committed files no longer give (python experiments/doc_numbers.py --write):\n  '
              + '\n  '.join(stale))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
