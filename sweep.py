"""Run the paper's paired experiment: every configuration x every seed, then the significance report.

    python sweep.py -- --dataset cifar10                      # baseline and proposed, seeds 1..15
    python sweep.py --seeds 1-5 --config 'gamma05=--bn_weight 0.5 --c 100' -- --num_epochs 30
    python sweep.py --dry_run -- --dataset fashionmnist       # list the runs, their state and the data's

Flags after '--' go to every train.py run; a configuration's own flags come after them
and win. A sweep lives in a home of its own, {path}/{sweep}: --sweep names it, or else
its protocol does (e.g. fashionmnist-mlp-num_epochs2), so sweeps of different protocols
never collide and the same command finds its runs again. Each run is `train.py ... --name
{configuration}_seed{seed} --seed {seed} --resume`: finished runs are skipped,
interrupted ones resumed, so the sweep itself can be stopped and restarted. Every run's
flags and, once per data folder, the data are checked before anything runs or is
submitted. Runs train here (revisiting_bn/sweep_local.py) or on SLURM (--slurm,
revisiting_bn/slurm.py); the report goes to {path}/{sweep}/report/.
"""
import atexit
import contextlib
import importlib
import os
import shlex
import sys
import threading

from revisiting_bn.cli import USAGE, OneLineParser, RunError, Stopped, exit_on_error, plural, stops_raise
from revisiting_bn.cpu_threads import usable_cores
from revisiting_bn.data_files import decoded_for_runs
from revisiting_bn.protocol import TRIAL_SEEDS
from revisiting_bn.results import ResultsError, load_runs
from revisiting_bn.runs import DEFAULT_PATH
from revisiting_bn.slurm import SLURM_DEFAULTS, StoppedWaiting, run_on_slurm, slurm_available, slurm_options
from revisiting_bn.sweep_local import (LocalSweep, Workers, launch_process, slots, summarize_ended, train_command,
                                       visible_gpus)
from revisiting_bn.sweep_plan import (data_lines, describe_plan, draw_splits, fetch_data, make_plan, prepare_tracking,
                                      run_datasets, write_manifest)

__all__ = ['build_parser', 'main']


def _runs_flags(p):
    p.add_argument('--configs', nargs='+', help='configurations to run (default: baseline, proposed and any '
                                                '--config/--config_file ones; also built in: no_bn, bn_only, '
                                                'bn_only_small_init, mabn)')
    p.add_argument('--config', action='append', default=[],
                   help="define a configuration: NAME='--train_py_flag value ...' (repeatable)")
    p.add_argument('--config_file', help='JSON file {name: "flags"} or {name: {flag: value}}')
    p.add_argument('--grid', action='append', default=[], metavar='FLAG=V1,V2,...',
                   help='an ablation grid: the values of each --grid flag (repeatable) are crossed into configurations '
                        'named from them (e.g. bn_weight0.1_c100), on top of the proposed configuration\'s flags (or '
                        '--grid_base), and run with the baseline, each tested against it')
    p.add_argument('--grid_base', default=None, metavar="'FLAGS'",
                   help="the train.py flags every --grid configuration starts from (default: proposed's, "
                        "'--bn_weight 0.1 --c 100 --input_norm bn')")
    p.add_argument('--seeds', default=TRIAL_SEEDS, help='seeds: a range 1-15 or a list 1,3,5')
    p.add_argument('--vary_split', action='store_true',
                   help='draw each run\'s validation split with its trial seed (train.py --split_seed SEED) instead of '
                        'the paper\'s fixed split: the seeds then vary the data too; a baseline and a configuration of '
                        'one seed still share a split, and stay paired')
    p.add_argument('--path', default=DEFAULT_PATH, help='the folder that holds the sweeps: this one is {path}/{sweep}')
    p.add_argument('--sweep', default=None, metavar='NAME',
                   help='the sweep\'s name, its folder under --path (default: from what sets its protocol apart, its '
                        'dataset, network and every protocol setting other than train.py\'s default, e.g. '
                        'fashionmnist-mlp-num_epochs2)')
    p.add_argument('--task_index', type=int, default=None,
                   help='run only the run with this index (0-based), e.g. $SLURM_ARRAY_TASK_ID in a job array')
    p.add_argument('--dry_run', action='store_true', help='print the runs, their state and the data\'s, run nothing')
    p.add_argument('--no_report', action='store_true', help='skip report.py at the end')
    p.add_argument('--baseline', default='baseline', help='the configuration the report tests the others against')
    p.add_argument('--may_differ', nargs='+', default=[], metavar='SETTING',
                   help="the report's --may_differ: protocol settings the configurations vary on purpose")


def _machine_flags(p):
    p.add_argument('--gpus', type=int, default=None, help='GPUs to use (default: all visible; 0 runs on CPU)')
    p.add_argument('--runs_per_gpu', type=int, default=1, help='concurrent runs per GPU')
    p.add_argument('--cpu_jobs', type=int, default=None,
                   help=f'without a GPU: runs at once (default: one per core this process may use, {usable_cores()} '
                        'here, divided by --threads)')
    p.add_argument('--threads', type=int, default=None,
                   help='CPU threads of each run (default: the cores shared out among the runs at once: 1 per CPU '
                        'job; on GPUs, the cores per GPU run); recorded in each run\'s results')
    cluster = p.add_argument_group('SLURM (--slurm: every unfinished run as one job array through submitit; --path '
                                   'must be on a filesystem the nodes share)')
    cluster.add_argument('--slurm', action='store_true', help='submit the runs to SLURM instead of running them here, '
                                                              'wait for them, then write the report')
    cluster.add_argument('--partition', default=SLURM_DEFAULTS['partition'],
                         help="the SLURM partition (default: the cluster's default)")
    cluster.add_argument('--time', type=int, default=SLURM_DEFAULTS['time'],
                         help='time limit of each task in minutes (a task that reaches it is requeued and resumes)')
    cluster.add_argument('--cpus_per_task', type=int, default=SLURM_DEFAULTS['cpus_per_task'],
                         help="CPUs of each task (each run's --threads)")
    cluster.add_argument('--gpus_per_task', type=int, default=SLURM_DEFAULTS['gpus_per_task'],
                         help='GPUs of each task (0: the runs train on the CPU)')
    cluster.add_argument('--array_parallelism', type=int, default=SLURM_DEFAULTS['array_parallelism'],
                         help='tasks of the array that may run at once')
    cluster.add_argument('--slurm_parameter', action='append', default=[], metavar='KEY=VALUE',
                         help='any further sbatch parameter, e.g. --slurm_parameter account=mylab (repeatable)')
    cluster.add_argument('--no_wait', action='store_true',
                         help='submit and return, printing the command that reports once the tasks are done')


def build_parser():
    p = OneLineParser(prog='sweep.py', usage='%(prog)s [sweep flags] -- [train.py flags for every run]',
                      description=__doc__.split('\n\n')[0] + " train.py's own flags (--dataset, --network, "
                      "--num_epochs, ...) go after '--' and reach every run.")
    _runs_flags(p)
    _machine_flags(p)
    return p


def parse_own(p, own):
    """sweep.py's own flags (before '--'), checked; a usage error ends the program in one line (exit 2)."""
    args, unknown = p.parse_known_args(own)
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)} (train.py's flags go after '--': sweep.py "
                f"[sweep flags] -- {' '.join(unknown)})")
    if args.runs_per_gpu < 1 or (args.gpus is not None and args.gpus < 0):
        p.error('--runs_per_gpu must be >= 1 and --gpus >= 0')
    if (args.cpu_jobs is not None and args.cpu_jobs < 1) or (args.threads is not None and args.threads < 1):
        p.error('--cpu_jobs and --threads must be >= 1')
    if args.sweep is not None:
        from revisiting_bn.flags import name_problems
        for problem in name_problems(args.sweep, '--sweep'):
            p.error(problem)
    return args


def machine(args):
    """Where the runs go: (slots, threads of each), on SLURM the task's device and CPUs."""
    if args.slurm:
        slurm_options(args)
        problem = slurm_available()
        if problem:
            raise RunError(f'--slurm: {problem}', USAGE)
        return [('cuda' if args.gpus_per_task else 'cpu', None)], args.cpus_per_task
    if args.gpus is None:
        args.gpus = visible_gpus()
    return slots(args.gpus, args.runs_per_gpu, args.cpu_jobs, args.threads)


def dry_run(plan, slot_list, threads):
    print(f'sweep {plan.name}: home {plan.home}' + ('' if os.path.exists(plan.files['manifest']) else ' (new)'))
    for line in data_lines(plan):
        print(line)
    for index, run in enumerate(plan.runs):
        print(f"[{index}] {run['state']:>8}  python train.py {shlex.join(run['argv'])}")
    print(describe_plan(plan, slot_list, threads))
    return 0


def run_here(args, plan, slot_list, threads):
    todo = [run for run in plan.runs if run['state'] != 'finished']
    print(f'sweep {plan.name} in {plan.home}: {plural(len(plan.runs), "run")}: {len(plan.runs) - len(todo)} already '
          f'finished, {len(todo)} to do, {len(slot_list)} at a time on {slot_list[0][0]}, '
          f'{plural(threads, "thread")} each', flush=True)
    workers = Workers({run['settings']['network'] for run in todo}) if todo and slot_list[0][0] == 'cpu' else None
    sweep = LocalSweep(todo, slot_list, workers.launch if workers else launch_process)
    report = not args.no_report and args.task_index is None
    preparing = threading.Thread(target=_prepare_the_report, daemon=True)
    if report:  # its imports and matplotlib's first figure, on a core the workers' start leaves free
        preparing.start()
    with contextlib.ExitStack() as data:
        with stops_raise():  # what each run would do first, done once while the workers start; a stop here leaves
            data.enter_context(decoded_for_runs(run_datasets(todo)))  # nothing behind
            draw_splits(todo)
        ended = sweep.go()
    if sweep.stopping is not None:
        print(f'sweep stopped by {Stopped(sweep.stopping).name}; run the same command again to resume', file=sys.stderr)
        return 128 + sweep.stopping
    failed = summarize_ended(ended)
    if report:
        preparing.join()  # matplotlib draws in one thread at a time
        write_sweep_report(plan, args.baseline, args.may_differ)
    return 1 if failed else 0


def _prepare_the_report():
    """The report's modules (SciPy, matplotlib) imported and matplotlib's fonts and PNG writer loaded while the
    workers start, so the report waits for none of them."""
    for module in ('report_tables', 'report_figures', 'report_html'):
        importlib.import_module(f'revisiting_bn.{module}')
    importlib.import_module('revisiting_bn.figure_style').warm_up()


def run_slurm(args, plan, slot_list):
    # Kept in the split cache: where the nodes share it (a shared home), no task draws one.
    draw_splits([run for run in plan.runs if run['state'] != 'finished'])
    report = f'python {os.path.join(os.path.dirname(os.path.abspath(__file__)), "report.py")} {plan.home} --out ' \
             f'{plan.files["report"]}'
    failed = run_on_slurm(plan, slurm_options(args), lambda run: train_command(run, slot_list[0][0]), args.no_wait,
                          report)
    if failed is None:
        return 0
    if not args.no_report:
        write_sweep_report(plan, args.baseline, args.may_differ)
    return 1 if failed else 0


def write_sweep_report(plan, baseline, may_differ=()):
    from revisiting_bn.report_tables import write_report
    files = [run['paths']['json'] for run in plan.runs if os.path.exists(run['paths']['json'])]
    out = plan.files['report']
    if not files:
        print(f'sweep.py: no report: none of the {plural(len(plan.runs), "run")} has results yet', file=sys.stderr)
        return
    try:
        text, not_made = write_report(load_runs(files), out, baseline, may_differ=may_differ)
    except ResultsError as error:
        print(f'sweep.py: no report: {error}', file=sys.stderr)
        return
    print(text, end='')
    print(f'report written to {out}' + ''.join(f'; {figure} not made: {why}' for figure, why in not_made.items()))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index('--') if '--' in argv else len(argv)
    parser = build_parser()
    args, common = parse_own(parser, argv[:split]), argv[split + 1:]
    try:
        with stops_raise():  # until the runs start: a stop here leaves nothing behind
            slot_list, threads = machine(args)
            plan = make_plan(args, common, slot_list[0][0], threads)
            if args.dry_run:
                return dry_run(plan, slot_list, threads)
            fetch_data(plan)
            write_manifest(plan, ['sweep.py', *argv])
            prepare_tracking(plan)
        return run_slurm(args, plan, slot_list) if args.slurm else run_here(args, plan, slot_list, threads)
    except Stopped as stop:
        print(f'sweep.py: stopped by {stop.name} before any run started; run the same command again to start',
              file=sys.stderr)
        return stop.status
    except RunError as error:
        if error.status == USAGE:
            parser.error(str(error))
        print(f'sweep.py: {"" if isinstance(error, StoppedWaiting) else "error: "}{error}', file=sys.stderr)
        return error.status


def _leave(status):
    """Exit with ``status`` once the output is flushed and the exit handlers have run, without the interpreter's
    teardown of the modules the report loaded (SciPy, matplotlib: 0.15-0.2 s on a 2-core Intel Xeon)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    atexit._run_exitfuncs()
    os._exit(status or 0)


if __name__ == '__main__':
    with exit_on_error('sweep.py'):
        _leave(main())
