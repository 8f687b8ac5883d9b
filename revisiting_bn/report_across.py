"""The report across protocols: one configuration against its own baseline in several protocols, and the verdict pooled.

When a configuration of one name (proposed, say) is tested against its own protocol's baseline in
several protocols of one report (other datasets, networks, budgets, or sweeps), each test stays
within its protocol, and this section sets them side by side: per protocol the mean paired
difference with its interval, P(A>B) with its bootstrap interval and the protocol's verdict (after
Holm, as its table says it); then, pooled, the mean P(A>B) over the protocols with a stratified
bootstrap interval (seeds resampled within each protocol, as rliable does: Agarwal et al., NeurIPS
2021), and how many protocols find it significantly better and how many significantly worse. Written
into report.md and report.html (section blocks), across_protocols.csv and across_protocols.png.
"""
import csv

from .t_test import CONFIDENCE, stratified_prob_improvement

__all__ = ['across_protocols', 'pooled', 'across_blocks', 'write_across_csv']

COLUMNS = ('configuration', 'protocol', 'sweep', 'title', 'baseline', 'paired_seeds', 'mean_paired_difference',
           'ci95_low', 'ci95_high', 'prob_improvement', 'prob_improvement_ci95_low', 'prob_improvement_ci95_high',
           'significantly_better', 'significantly_worse')


def across_protocols(tables):
    """{configuration: [(table, its comparison)]}: the configurations with a p-value against their own protocol's
    baseline in at least two tables."""
    found = {}
    for table in tables:
        for c in table['comparisons']:
            if c['p_value'] is not None:
                found.setdefault(c['configuration'], []).append((table, c))
    return {label: entries for label, entries in found.items() if len(entries) > 1}


def pooled(entries):
    """A configuration across its protocols: the mean P(A>B) with its stratified bootstrap interval, the seeds, and how
    many protocols find it significantly better and significantly worse."""
    mean, low, high = stratified_prob_improvement([(c['differences'], [0.0] * len(c['differences']))
                                                   for _, c in entries])
    return {'prob_improvement': mean, 'prob_improvement_ci95_low': low, 'prob_improvement_ci95_high': high,
            'paired_seeds': sum(len(c['paired_seeds']) for _, c in entries),
            'significantly_better': sum(c['significant'] for _, c in entries),
            'significantly_worse': sum(c['significantly_lower'] for _, c in entries)}


def _verdict(c):
    return 'significantly greater' if c['significant'] else 'significantly lower' if c['significantly_lower'] else \
        'neither'


def _interval(low, high, digits=2):
    return f'[{low:+.{digits}f}, {high:+.{digits}f}]'


def across_blocks(across, baseline):
    """The report's section: a table per configuration, a row per protocol, then the pooled row, and a sentence."""
    if not across:
        return []
    blocks = [('h2', 'Across protocols'),
              ('p', f'Each configuration below is tested against the {baseline} of its own protocol in several '
                    f'protocols; side by side at the paper\'s measure, then pooled: the mean P(A>B) over the protocols '
                    f'with a stratified bootstrap {CONFIDENCE:.0%} interval (seeds resampled within each protocol), '
                    f'and how many protocols find it significantly better or worse (each by its own table\'s test, '
                    f'after Holm).')]
    for label, entries in across.items():
        rows = [[f"{table['id']}: {table['line']}", len(c['paired_seeds']),
                 f"{c['mean_difference']:+.2f} {_interval(c['ci95_low'], c['ci95_high'])}",
                 f"{c['prob_improvement']:.2f} [{c['prob_improvement_ci95_low']:.2f}, "
                 f"{c['prob_improvement_ci95_high']:.2f}]", _verdict(c)] for table, c in entries]
        total = pooled(entries)
        rows.append([f'**all {len(entries)} protocols**', total['paired_seeds'], '',
                     f"**{total['prob_improvement']:.2f} [{total['prob_improvement_ci95_low']:.2f}, "
                     f"{total['prob_improvement_ci95_high']:.2f}]**",
                     f"better in {total['significantly_better']}, worse in {total['significantly_worse']}"])
        blocks += [('p', f'**{label}** against {baseline}:'),
                   ('table', ['protocol', 'paired seeds', f'mean paired difference (points) [{CONFIDENCE:.0%} '
                              f'interval]', f'P(A>B) [{CONFIDENCE:.0%} interval]', 'verdict'], rows)]
    return blocks


def write_across_csv(path, across):
    """across_protocols.csv: a row per configuration and protocol, then a row per configuration pooled ('all')."""
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for label, entries in across.items():
            for table, c in entries:
                writer.writerow({'configuration': label, 'protocol': table['id'], 'sweep': table['sweep'],
                                 'title': table['line'], 'baseline': c['baseline'],
                                 'paired_seeds': len(c['paired_seeds']), 'mean_paired_difference': c['mean_difference'],
                                 **{key: c[key] for key in COLUMNS[7:12]},
                                 'significantly_better': int(c['significant']),
                                 'significantly_worse': int(c['significantly_lower'])})
            writer.writerow({'configuration': label, 'protocol': 'all', 'title': f'{len(entries)} protocols pooled',
                             'baseline': entries[0][1]['baseline'], **pooled(entries)})
