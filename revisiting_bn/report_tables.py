"""The report's tables: like against like, each configuration against its protocol's baseline, report.md and .csv.

Runs are grouped by sweep first (two sweeps are never mixed), then by protocol: the dataset (and
data folder), network, image size, epochs, batch size, optimiser and schedule, precision
(experiment.protocol_settings; ``may_differ`` names more that may differ). Within a protocol,
runs are grouped by configuration (the run name without its '_seed<N>' suffix, as sweep.py names
them), and each configuration is tested against that protocol's baseline, paired by seed
(t_test.paired_summary), at the best-validation epoch and at the final one.
"""
import csv
import os

import numpy as np

from .cli import number_ranges, plural
from .experiment import protocol_settings, shown
from .report_across import across_blocks, across_protocols, pooled, write_across_csv
from .protocol import SIGNIFICANCE
from .results import group_protocols, has_best, is_finished, split_policy
from .t_test import CONFIDENCE, POWER, format_p, holm, paired_summary

__all__ = ['METRICS', 'summarize', 'compare', 'verdict_words', 'protocol_tables', 'protocol_line', 'section_blocks',
           'render_markdown', 'write_csv', 'write_report']

# The two test accuracies a run reports, as named in its results JSON and in the tables.
METRICS = {'test_accuracy_at_best': 'best val. epoch', 'final_test_accuracy': 'final epoch'}
STATISTICS = ('mean_paired_difference', 'ci95_low', 'ci95_high', 'effect_size_dz', 'prob_improvement',
              'prob_improvement_ci95_low', 'prob_improvement_ci95_high', 'p_value', 'significant',
              'p_value_two_sided', 'wilcoxon_p', 'p_holm', 'significant_before_holm', 'p_holm_two_sided',
              'significantly_lower', 'min_detectable_difference', 'seeds_needed')


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


def dataset_name(config):
    """The dataset as the tables show it: with its data folder where it is a folder of images."""
    return f"folder ({config.get('data_dir')})" if config.get('dataset') == 'folder' else config['dataset']


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
                     'input_norm': config['input_norm'], 'dataset': dataset_name(config), 'network': config['network'],
                     'num_epochs': config['num_epochs'], 'seeds': list(finished),
                     'unfinished_seeds': sorted(s for s, r in seeds.items() if not is_finished(r['record'])),
                     'no_best_seeds': sorted(s for s, r in seeds.items() if is_finished(r['record'])
                                             and not has_best(r['record'])),
                     'best': _mean_std(best), 'final': _mean_std(final), 'best_values': best})
    return rows


def _paired_test(ours, theirs):
    """Every figure of one paired comparison (t_test.paired_summary) and the per-seed differences."""
    return {**paired_summary(ours, theirs), 'differences': [a - b for a, b in zip(ours, theirs)]}


def _significant(p):
    return p is not None and p <= SIGNIFICANCE


def _family_verdicts(tests):
    """The verdicts of one family of comparisons (a table's, at one measure): the one- and two-sided p-values
    Holm-adjusted over the family, and 'significant' (a gain) and 'significantly_lower' as Holm's adjusted p allows;
    with one comparison, Holm's p is the p-value itself, so the paper's verdict (p <= 0.05) is unchanged."""
    for key, adjusted_key in (('p_value', 'p_holm'), ('p_value_two_sided', 'p_holm_two_sided')):
        for test, adjusted in zip(tests, holm([test[key] for test in tests])):
            test[adjusted_key] = adjusted
    for test in tests:
        test['family'] = len(tests)
        test['significant'] = _significant(test['p_holm'])
        test['significant_before_holm'] = _significant(test['p_value'])
        test['significantly_lower'] = bool(test['mean_difference'] is not None and test['mean_difference'] < 0
                                           and _significant(test['p_holm_two_sided']))


def compare(groups, baseline):
    """Each configuration against ``baseline``, paired by seed over finished runs, at the best-validation epoch
    (the paper's measure: the top-level keys) and at the final epoch (under 'final'); the p-values are
    Holm-adjusted over the table's comparisons, per measure, and the verdicts follow Holm (_family_verdicts)."""
    if baseline not in groups:
        return []
    done = {label: {s: r['record'] for s, r in seeds.items() if is_finished(r['record']) and has_best(r['record'])}
            for label, seeds in groups.items()}
    comparisons = []
    split = lambda record: int(record['config'].get('split_seed', 0))  # noqa: E731
    for label in groups:
        if label == baseline:
            continue
        both = sorted(set(done[label]) & set(done[baseline]))
        paired = [s for s in both if split(done[label][s]) == split(done[baseline][s])]  # one split, one pair
        tests = {metric: _paired_test([done[label][s][metric] for s in paired],
                                      [done[baseline][s][metric] for s in paired]) for metric in METRICS}
        comparisons.append({
            'configuration': label, 'baseline': baseline, 'paired_seeds': paired,
            'only_in_configuration': sorted(set(done[label]) - set(done[baseline])),
            'only_in_baseline': sorted(set(done[baseline]) - set(done[label])),
            'other_split': sorted(set(both) - set(paired)),
            **tests['test_accuracy_at_best'], 'final': tests['final_test_accuracy']})
    for tests in (comparisons, [c['final'] for c in comparisons]):
        _family_verdicts(tests)
    return comparisons


def _pm(pair):
    return 'n/a' if pair[0] is None else f'{pair[0]:.2f} ± {pair[1]:.2f}'


def _seed_list(seeds):
    return ', '.join(map(str, seeds)) or 'none'


def _signed(value, digits=2):
    return 'n/a' if value is None else f'{value:+.{digits}f}'


def _interval(test):
    return 'n/a' if test['ci95_low'] is None else f"[{test['ci95_low']:+.2f}, {test['ci95_high']:+.2f}]"


def verdict_words(c):
    """A comparison's verdict in words that follow its family: "significantly greater" only where Holm's adjusted p
    allows it; a p-value at or below 0.05 that Holm does not keep is said to be just that."""
    p, held, family = format_p(c['p_value']), format_p(c['p_holm']), f"Holm over {c['family']} comparisons"
    wilcoxon = f"Wilcoxon p = {format_p(c['wilcoxon_p'])}"
    if c['family'] == 1:
        verdict = f"{'' if c['significant'] else 'not '}significantly greater (p = {p}, {held} after Holm; {wilcoxon})"
    elif c['significant']:
        verdict = f'significantly greater after {family} (p = {p}, {held} after Holm; {wilcoxon})'
    elif c['significant_before_holm']:
        verdict = f'p = {p}, not significant after {family} (Holm p = {held}; {wilcoxon})'
    else:
        verdict = f'not significantly greater (p = {p}, {held} after {family}; {wilcoxon})'
    two_sided, two_held = format_p(c['p_value_two_sided']), format_p(c['p_holm_two_sided'])
    if c['significantly_lower']:
        verdict += f"; significantly lower (two-sided p = {two_sided}" + \
            (f", {two_held} after {family})" if c['family'] > 1 else ')')
    elif c['mean_difference'] < 0 and _significant(c['p_value_two_sided']):
        verdict += f'; lower with two-sided p = {two_sided}, not significant after {family} (Holm p = {two_held})'
    return verdict


def _beats(c, n, baseline):
    """'beats baseline on 11 of 15 seeds: P(A>B) 0.73 [0.50, 0.93]' (ties count one half in P(A>B))."""
    ties = round((c['prob_improvement'] - c['wins'] / n) * 2 * n)
    tied = f" ({plural(ties, 'tie')})" if ties else ''
    return f"beats {baseline} on {c['wins']} of {n} seeds{tied}: P(A>B) {_probability(c)}"


def _probability(test):
    if test.get('prob_improvement') is None:
        return 'n/a'
    return (f"{test['prob_improvement']:.2f} [{test['prob_improvement_ci95_low']:.2f}, "
            f"{test['prob_improvement_ci95_high']:.2f}]")


def in_words(c, baseline):
    """One comparison, at the paper's measure, as a reader would say it."""
    n, difference = len(c['paired_seeds']), c['mean_difference']
    seeds = plural(n, 'paired seed')
    if c['p_value'] is None:
        return f"**{c['configuration']} vs {baseline}** ({seeds}): no test ({c['note']})."
    verdict = verdict_words(c)
    words = (f"**{c['configuration']} vs {baseline}** ({seeds}): mean difference {difference:+.2f} points, "
             f"{CONFIDENCE:.0%} interval {_interval(c)}, d_z {c['effect_size_dz']:+.2f}; {_beats(c, n, baseline)}; {verdict}. With {n} seeds, a "
             f"gain below {c['min_detectable_difference']:.2f} points would likely go unseen (power under {POWER:.0%} "
             f"at p <= {SIGNIFICANCE:g})")
    if c['seeds_needed'] is not None and not c['significant']:
        words += f"; a true gain of {difference:.2f} points would need about {c['seeds_needed']} paired seeds"
    return words + '.'


def protocol_title(key, keys):
    """A protocol in words: what sets it apart from the report's other protocols (or its dataset, network and
    epochs when it is the only one)."""
    values = dict(key)
    apart = [name for name in values if len({dict(k).get(name) for k in keys}) > 1] or \
        ['dataset', 'network', 'num_epochs']
    return ', '.join(f'{name} {shown(values[name])}' for name in apart)


def _settings_table(rows):
    return ('table', ['configuration', 'dataset', 'network', 'epochs', 'batch', 'normalisation', 'bn_weight', 'c',
                      'input_norm', 'arithmetic', 'seeds', 'test acc. at best val. (%)', 'final test acc. (%)'],
            [[r['configuration'], r['dataset'], r['network'], r['num_epochs'], r['batch_size'], r['normalisation'],
              f"{r['bn_weight']:g}", f"{r['c']:g}", r['input_norm'], r['arithmetic'], len(r['seeds']), _pm(r['best']),
              _pm(r['final'])] for r in rows])


def _comparison_table(comparisons, baseline):
    """The comparisons' figures, a row per comparison and measure; * marks a significant gain, on the p-value that
    decides it: Holm's adjusted p where the table holds several comparisons, the p-value where it holds one."""
    rows = []
    for c in comparisons:
        for metric, test in zip(METRICS.values(), (c, c['final'])):
            mark = ' *' if test['significant'] else ''
            detectable = 'n/a' if test['min_detectable_difference'] is None else \
                f"{test['min_detectable_difference']:.2f}"
            rows.append([f"{c['configuration']} vs {baseline}", metric, len(c['paired_seeds']),
                         _signed(test['mean_difference']), _interval(test), _signed(test['effect_size_dz']),
                         _probability(test), format_p(test['p_value']) + (mark if test['family'] == 1 else ''),
                         format_p(test['p_holm']) + (mark if test['family'] > 1 else ''),
                         format_p(test['wilcoxon_p']), format_p(test['p_value_two_sided']), detectable,
                         test['seeds_needed'] or ''])
    return ('table', ['comparison', 'test accuracy at', 'paired seeds', 'mean paired difference (points)',
                      f'{CONFIDENCE:.0%} interval', 'd_z', f'P(A>B) [{CONFIDENCE:.0%} interval]', 'p-value', 'Holm p',
                      'Wilcoxon p', 'two-sided p',
                      'smallest detectable gain', f'seeds for {POWER:.0%} power'], rows)


def _notes(rows, comparisons, baseline, left_out):
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
        if c['other_split']:
            notes.append(f"{c['configuration']} vs {baseline}: seeds whose two runs used different validation splits, "
                         f"so they are no pair (left out of the test): {_seed_list(c['other_split'])}")
        if c['note']:
            notes.append(f"{c['configuration']} vs {baseline}: no p-value: {c['note']}")
    return notes


def sources_of_variation(groups):
    """In one sentence, what the seeds of a table varied: the initialisation, data order and flips always; the
    validation split too where it was drawn with each seed (results.split_policy)."""
    policies = {split_policy(seeds.values()) for seeds in groups.values()}
    varied = 'the initial weights, the data order and the flips'
    if policies == {('varied', None)}:
        return (f'Sources of variation: each seed drew {varied}, and the validation split too (sweep.py '
                f'--vary_split): a configuration and its baseline of one seed share their split.')
    if len(policies) == 1 and next(iter(policies))[0] == 'fixed':
        return (f'Sources of variation: each seed drew {varied}; the validation split was fixed (split seed '
                f'{next(iter(policies))[1]}) for every seed, so its own variance is not in these intervals.')
    return (f'Sources of variation: each seed drew {varied}; the validation split was fixed for some configurations '
            f'and drawn with each seed for others: only seeds with one split in both runs are paired.')


def section_blocks(rows, comparisons, baseline, left_out=(), figures=(), groups=None):
    """One table's part of the report as blocks, which report.md and report.html each write in their format:
    ('table', header, rows), ('p', text), ('ul', items), ('figures', [(file, caption)])."""
    blocks = [_settings_table(rows)] + ([('p', sources_of_variation(groups))] if groups else [])
    if comparisons:
        family = len(comparisons)
        blocks += [('p', f'Each configuration against {baseline}, paired by seed, at the test accuracy of the '
                         f'best-validation epoch (the paper\'s measure) and of the final epoch: the mean paired '
                         f'difference with its {CONFIDENCE:.0%} interval and effect size d_z; the one-sided paired '
                         f't-test (configuration > {baseline}), Holm-adjusted over this table\'s {family} '
                         f'comparison{"s" if family > 1 else ""} (* marks a significant gain: '
                         f'{"Holm" if family > 1 else "its"} p <= {SIGNIFICANCE:g}), Wilcoxon\'s signed-rank test (no '
                         f'normality assumed), and the two-sided t-test (do they differ at all?); the smallest true '
                         f'gain these seeds would detect with {POWER:.0%} power, and the seeds a gain of the observed '
                         f'size needs for it.'),
                   _comparison_table(comparisons, baseline),
                   ('p', 'In words, at the paper\'s measure:'), ('ul', [in_words(c, baseline) for c in comparisons])]
    elif baseline in [r['configuration'] for r in rows]:
        blocks.append(('p', f'No comparison: there are results of {baseline!r} only, no other configuration to test.'))
    elif baseline:
        blocks.append(('p', f'No comparison: there are no results named {baseline!r} (choose one with --baseline).'))
    if figures:
        blocks += [('p', 'Figures:'), ('figures', list(figures))]
    notes = _notes(rows, comparisons, baseline, left_out)
    if notes:
        blocks += [('p', 'Notes:'), ('ul', notes)]
    return blocks


def _cells(cells):
    return '| ' + ' | '.join(map(str, cells)) + ' |'


def render_markdown(blocks):
    """report.md: the blocks (section_blocks, and ('h2', title)) as Markdown."""
    parts = []
    for kind, *content in blocks:
        if kind == 'table':
            header, rows = content
            parts.append('\n'.join([_cells(header), '|' + '---|' * len(header), *map(_cells, rows)]))
        elif kind == 'ul':
            parts.append('\n'.join(f'- {item}' for item in content[0]))
        elif kind == 'figures':
            parts.append('\n'.join(f'- [{figure}]({figure}): {caption}' for figure, caption in content[0]))
        else:
            parts.append(('## ' if kind == 'h2' else '') + content[0])
    return '\n\n'.join(parts) + '\n'


CSV_COLUMNS = ('protocol', 'sweep', 'configuration', 'dataset', 'network', 'num_epochs', 'batch_size', 'normalisation',
               'bn_weight', 'c', 'input_norm', 'arithmetic', 'n_seeds', 'seeds', 'unfinished_seeds', 'best_test_mean',
               'best_test_std', 'final_test_mean', 'final_test_std', 'baseline', 'paired_seeds', *STATISTICS,
               *(f'final_{name}' for name in STATISTICS), 'unpaired_seeds', 'untested_because')


_KEYS = {'mean_paired_difference': 'mean_difference'}  # report.csv's name -> the comparison's key, where they differ


def csv_rows(table):
    """report.csv's rows of one protocol's table: a configuration each, with its comparison's figures."""
    by_label = {c['configuration']: c for c in table['comparisons']}
    for r in table['rows']:
        c = by_label.get(r['configuration'], {})
        figures = {name: c.get(_KEYS.get(name, name), '') for name in STATISTICS}
        final = {f'final_{name}': c.get('final', {}).get(_KEYS.get(name, name), '') for name in STATISTICS}
        unpaired = c.get('only_in_configuration', []) + c.get('only_in_baseline', [])
        settings = ('configuration', 'dataset', 'network', 'num_epochs', 'batch_size', 'normalisation', 'bn_weight',
                    'c', 'input_norm', 'arithmetic')
        yield {'protocol': table['id'], 'sweep': table.get('sweep', ''), **{key: r[key] for key in settings},
               'n_seeds': len(r['seeds']), 'seeds': ' '.join(map(str, r['seeds'])),
               'unfinished_seeds': ' '.join(map(str, r['unfinished_seeds'])),
               'best_test_mean': r['best'][0], 'best_test_std': r['best'][1], 'final_test_mean': r['final'][0],
               'final_test_std': r['final'][1], 'baseline': c.get('baseline', ''),
               'paired_seeds': ' '.join(map(str, c.get('paired_seeds', []))), **figures, **final,
               'unpaired_seeds': ' '.join(map(str, sorted(set(unpaired)))),
               'untested_because': table.get('untested_because', {}).get(r['configuration'], '')}


def write_csv(path, tables):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        for table in tables:
            writer.writerows({key: ('' if value is None else value) for key, value in row.items()}
                             for row in csv_rows(table))


def sweep_label(home):
    """A sweep as the report names it: its folder's name (its --sweep), or '' for runs made outside a sweep."""
    return os.path.basename(os.path.normpath(home)) if home else ''


def protocol_tables(runs, baseline, may_differ=()):
    """One table per sweep and protocol (results.group_protocols): its rows, its comparisons with its own baseline,
    and, where it has no baseline, why each configuration is not tested (the protocol settings in which the
    baseline's runs differ, those of its own sweep first)."""
    protocols = group_protocols(runs, may_differ)
    keys = [key for _, key, _ in protocols]
    several_sweeps = len({sweep for sweep, _, _ in protocols}) > 1
    tables = []
    for number, (sweep, key, groups) in enumerate(protocols, start=1):
        title = protocol_title(key, keys)
        if several_sweeps:
            title = f'sweep {sweep_label(sweep) or "(runs outside a sweep)"}: {title}'
        table = {'id': f'P{number}', 'key': key, 'sweep': sweep_label(sweep), 'groups': groups, 'title': title,
                 'rows': summarize(groups), 'comparisons': compare(groups, baseline)}
        table['line'] = protocol_line(table)
        baselines = sorted(((other != sweep, dict(other_key)) for other, other_key, other_groups in protocols
                            if baseline in other_groups), key=lambda item: item[0])
        if baseline not in groups and baselines:
            mine, reference = dict(key), baselines[0][1]
            differs = [f"{name}: {shown(reference.get(name))} ({baseline}) -> {shown(mine.get(name))}"
                       for name in mine if reference.get(name) != mine.get(name)]
            why = (f"no {baseline} with the same protocol; its runs differ in {'; '.join(differs)}" if differs else
                   f"no {baseline} in this sweep (another sweep's {baseline} has the same protocol: report the two "
                   f"sweeps' runs together by giving their results files, or run {baseline} in this sweep)")
            table['untested_because'] = {label: why for label in groups}
        tables.append(table)
    return tables


def protocol_line(table):
    """What a table's figures show, in one line: dataset, network, epochs, batch, seeds (and the sweep)."""
    values = dict(table['key'])
    seeds = [seed for seeds in table['groups'].values() for seed in seeds]
    epochs = plural(int(float(shown(values['num_epochs']))), 'epoch')
    line = (f"{shown(values['dataset'])}, {shown(values['network'])}, {epochs}, batch {shown(values['batch_size'])}, "
            f"seeds {number_ranges(seeds)}")
    return line + (f" (sweep {table['sweep']})" if table['sweep'] else '')


def _report_sections(tables, out, baseline, plots, left_out):
    """[(heading or None, blocks)] of every table, the figures of each written into ``out``; and {figure: why not}."""
    from . import report_figures
    several, sections, not_made = len(tables) > 1, [], {}
    for table in tables:
        suffix = f"_{table['id']}" if several and table['id'] != 'P1' else ''
        missing = report_figures.write_plots(table['groups'], table['rows'], table['comparisons'], baseline, out,
                                             suffix, table['line']) \
            if plots and 'untested_because' not in table else {}
        made = [(f'{stem}{suffix}.png', report_figures.CAPTIONS[stem]) for stem in report_figures.STEMS
                if plots and os.path.exists(os.path.join(out, f'{stem}{suffix}.png'))]
        not_made.update(missing)
        heading = f"{table['id']}: {table['title']}" if several else None
        if 'untested_because' in table:
            sections.append((heading, [('ul', [f'{label}: not tested: {why}' for label, why in
                                               table['untested_because'].items()])]))
            continue
        notes = (list(left_out) if table is tables[0] else []) + [f'figure {figure} not made: {why}'
                                                                   for figure, why in missing.items()]
        sections.append((heading, section_blocks(table['rows'], table['comparisons'], baseline, notes, made,
                                                 table['groups'])))
    return sections, not_made


def write_report(runs, out, baseline='baseline', plots=True, left_out=(), may_differ=()):
    """Write report.md, report.html, report.csv and (optionally) the figures into ``out``, after removing the figures
    of an earlier report there; returns the Markdown and {figure: why it was not made}."""
    from . import report_figures
    from .report_html import write_html
    os.makedirs(out, exist_ok=True)
    for entry in os.listdir(out):  # never a stale figure beside a new report
        if entry.endswith('.png') and entry.split('.')[0].rsplit('_P', 1)[0] in report_figures.STEMS:
            os.remove(os.path.join(out, entry))
    tables = protocol_tables(runs, baseline, may_differ)
    sections, not_made = _report_sections(tables, out, baseline, plots, left_out)
    sweeps = len({table['sweep'] for table in tables})
    intro = [('p', f'{len(tables)} protocols{f" in {sweeps} sweeps" if sweeps > 1 else ""}: configurations are tested '
                   f'only against the {baseline} of their own {"sweep and " if sweeps > 1 else ""}protocol (the same '
                   f'{", ".join(protocol_settings(may_differ))}).')] if len(tables) > 1 else []
    across = across_protocols(tables)
    sections += _across_section(across, baseline, out, plots)
    blocks = intro + [block for heading, section in sections for block in
                      ([('h2', heading)] if heading else []) + section]
    text = render_markdown(blocks)
    with open(os.path.join(out, 'report.md'), 'w') as f:
        f.write(text)
    write_html(os.path.join(out, 'report.html'), tables, intro, sections, baseline, out)
    write_csv(os.path.join(out, 'report.csv'), tables)
    return text, not_made


def _across_section(across, baseline, out, plots):
    """[(None, blocks)] of the section across protocols, with its csv and figure written into ``out``; [] without it."""
    from . import report_figures
    for name in ('across_protocols.csv', 'across_protocols.png'):  # never a stale one beside a new report
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    if not across:
        return []
    write_across_csv(os.path.join(out, 'across_protocols.csv'), across)
    blocks = across_blocks(across, baseline)
    if plots:
        report_figures.across_protocols(across, pooled, baseline, os.path.join(out, 'across_protocols.png'))
        blocks += [('figures', [('across_protocols.png', 'per protocol the mean paired difference and P(A>B), each '
                                                         'with its interval, and P(A>B) pooled over the protocols.')])]
    return [(None, blocks)]
