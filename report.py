"""Turn train.py result files into the paper's table: like against like, paired t-tests, intervals, power, plots.

    python report.py training/ --out report/       # every sweep under training/, each against its own baseline

Reads every train.py results JSON under the given files or folders (from sweeps, a
train.py run, or copied from anywhere) and groups the runs by sweep (the home sweep.py
made for each: two sweeps are never mixed) and by protocol: the dataset (and data
folder), network, image size, epochs, batch size, optimiser and schedule, precision
(experiment.protocol_settings; --may_differ names more that may differ).
Within a protocol, runs are grouped by configuration (the run name without its
'_seed<N>' suffix, as sweep.py names them), and each configuration is tested against
that protocol's baseline, paired by seed: per comparison the mean paired difference,
its 95% interval and effect size, the one- and two-sided paired t-test (the paper's
test), Wilcoxon's signed-rank test, the p-values Holm-adjusted over the table, the
smallest gain these seeds would likely detect and the seeds a gain of the observed
size needs, at the best-validation epoch and at the final one (final_ columns). A
configuration whose protocol has no baseline is listed with what differs, never
tested. Seeds without a partner and unfinished runs are named, never dropped
silently. Writes report.md, report.csv and the figures.
"""
import os
import sys

from revisiting_bn.cli import OneLineParser, exit_on_error
from revisiting_bn.experiment import protocol_settings
from revisiting_bn.report_tables import write_report
from revisiting_bn.results import ResultsError, load_runs

__all__ = ['main']


def main(argv=None):
    p = OneLineParser(prog='report.py', description=__doc__.split('\n\n')[0])
    p.add_argument('results', nargs='+', help='result JSON files, folders searched recursively, or glob patterns')
    p.add_argument('--baseline', default='baseline', help='configuration the others are tested against')
    p.add_argument('--out', default='report', help='folder for report.md, report.csv and the plots')
    p.add_argument('--no_plots', action='store_true', help='write the tables only')
    p.add_argument('--skip_unreadable', action='store_true',
                   help='leave out results files that cannot be read (named in report.md) instead of refusing')
    p.add_argument('--may_differ', nargs='+', default=[], metavar='SETTING',
                   help='protocol settings your study varies on purpose (e.g. learning_rate): configurations that '
                        'differ in them are still tested against one baseline (by default only the method\'s own '
                        'settings may differ: bn_weight, c, input_norm, norm and its switches, train_only_bn)')
    args = p.parse_args(argv)
    unknown = sorted(set(args.may_differ) - set(protocol_settings()))
    if unknown:
        p.error(f'--may_differ {" ".join(unknown)}: not a protocol setting; choose among '
                f'{", ".join(protocol_settings())}')
    try:
        runs = load_runs(args.results, args.skip_unreadable)
        if not any(run['label'] == args.baseline for run in runs):
            labels = ', '.join(dict.fromkeys(run['label'] for run in runs))
            p.error(f'--baseline {args.baseline}: no results of that configuration (found: {labels})')
        left_out = [f'left out, unreadable (--skip_unreadable): {file}' for file in runs.unreadable]
        text, not_made = write_report(runs, args.out, args.baseline, not args.no_plots, left_out, args.may_differ)
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
