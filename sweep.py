"""Run the paper's paired experiment: every configuration x every seed, then the significance report.

    python sweep.py -- --dataset cifar10                      # baseline and proposed, seeds 1..15
    python sweep.py --seeds 1-5 --config 'gamma05=--bn_weight 0.5 --c 100' -- --num_epochs 30
    python sweep.py --dry_run -- --dataset fashionmnist       # list the runs and their state

Flags after '--' go to every train.py run; a configuration's own flags come after
them and win. Each run is `train.py ... --name {configuration}_seed{seed} --seed
{seed} --resume`: finished runs are skipped, interrupted ones resumed, so the sweep
itself can be killed and restarted. One run per visible GPU at a time (and
--runs_per_gpu per GPU); without a GPU, one single-thread run per core (--cpu_jobs,
--threads), which trains the most images per second on a CPU. A failed run is reported
and the others go on; each run's output goes to {path}/{dataset}/logs/{name}.log.
"""
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from revisiting_bn import flags as train_flags
from revisiting_bn.cli import OneLineParser, RunError, UsageError, exit_on_error, plural
from revisiting_bn.cpu_threads import usable_cores
from revisiting_bn.experiment import run_config, setting_differences
from revisiting_bn.protocol import TRIAL_SEEDS
from revisiting_bn.results import ResultsError, is_finished, load_runs, outcome, read_record, standing
from revisiting_bn.runs import RunLock, output_paths
from revisiting_bn.slurm import SLURM_DEFAULTS, Progress, TrainTask, queued, read_ledger, slurm_available, submit, wait

STANDARD = ['--bn_weight', '1', '--c', '1', '--input_norm', 'dataset']
BUILT_IN = {  # the paper's pair (run by default), then the related BN systems' comparisons (run when named)
    'baseline': STANDARD,
    'proposed': ['--bn_weight', '0.1', '--c', '100', '--input_norm', 'bn'],
    'no_bn': ['--norm', 'none', *STANDARD],                          # vs baseline: an MLP with and without BN
    'bn_only': ['--train_only_bn', *STANDARD],                       # BN-only training (Frankle et al.)
    'bn_only_small_init': ['--train_only_bn', '--bn_weight', '0.1', '--c', '1', '--input_norm', 'bn'],  # vs bn_only
    'mabn': ['--norm', 'mabn', *STANDARD],                           # vs baseline at a small batch (Yan et al.)
}
DEFAULT_CONFIGS = ('baseline', 'proposed')
SWEEP_CONTROLLED = ('--name', '--seed', '--path', '--resume', '--overwrite', '--device', '--threads')
HERE = os.path.dirname(os.path.abspath(__file__))


class SweepError(Exception):
    pass


def parse_seeds(text):
    """'1-15', '1,3,5' or '1-3,7' -> sorted unique seeds."""
    seeds = set()
    for part in text.split(','):
        low, _, high = part.partition('-')
        if not re.fullmatch(r'[0-9]+', low) or not re.fullmatch(r'[0-9]*', high):
            raise SweepError(f'--seeds {text!r}: use a range like 1-15 or a list like 1,3,5 (decimal digits only)')
        if high and int(high) < int(low):
            raise SweepError(f'--seeds {text!r}: the range {part} is reversed; write {high}-{low}')
        seeds.update(range(int(low), int(high or low) + 1))
    return sorted(seeds)


def flag_list(value):
    """A configuration's flags: a string of train.py flags, or a {flag: value} mapping."""
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, dict):
        return [item for key, v in value.items() for item in (f'--{key.lstrip("-")}', str(v))]
    raise SweepError(f'a configuration must be a string of flags or a mapping, got {value!r}')


def _own_name(name, where):
    """A user's configuration may not take a built-in one's name: its runs would be named, found and paired as
    that configuration's."""
    if name in BUILT_IN:
        raise SweepError(f'{where} {name}: {name!r} is built in ({shlex.join(BUILT_IN[name])}); give your '
                         f'configuration another name')
    return name


def grid_configurations(grid, base):
    """--grid FLAG=V1,V2,... (repeatable) crossed into configurations on top of ``base`` (flags), each named from
    its values in the order given: --grid bn_weight=0.1,1 --grid c=1,100 gives bn_weight0.1_c1, ... bn_weight1_c100."""
    axes = []
    for item in grid:
        flag, sep, values = item.partition('=')
        flag = flag.strip().lstrip('-')
        values = [value.strip() for value in values.split(',') if value.strip()]
        if not sep or not re.fullmatch(r'[a-z_]+', flag) or not values:
            raise SweepError(f"--grid {item!r}: use FLAG=VALUE,VALUE,... (a train.py flag without '--')")
        if flag in (name for name, _ in axes):
            raise SweepError(f'--grid {flag} is given twice: give its values once, comma-separated')
        if len(set(values)) < len(values):
            raise SweepError(f'--grid {item!r}: a value is given twice')
        axes.append((flag, values))
    configs = {}
    for combination in itertools.product(*(values for _, values in axes)):
        name = '_'.join(f'{flag}{value}' for (flag, _), value in zip(axes, combination))
        configs[name] = [*base, *(item for (flag, _), value in zip(axes, combination)
                                  for item in (f'--{flag}', value))]
    return configs


def configurations(args):
    configs = dict(BUILT_IN)
    if args.config_file:
        try:
            with open(args.config_file) as f:
                loaded = json.load(f)
        except (OSError, ValueError) as error:
            raise SweepError(f'--config_file {args.config_file}: {error}') from None
        if not isinstance(loaded, dict):
            raise SweepError(f'--config_file {args.config_file}: expected a JSON object {{name: flags}}')
        configs.update({_own_name(name, '--config_file'): flag_list(flags) for name, flags in loaded.items()})
    for item in args.config:
        name, sep, flags = item.partition('=')
        if not sep or not name.strip():
            raise SweepError(f"--config {item!r}: use NAME='--flag value ...'")
        configs[_own_name(name.strip(), '--config')] = flag_list(flags)
    if args.grid:
        base = flag_list(args.grid_base) if args.grid_base is not None else BUILT_IN['proposed']
        grid = grid_configurations(args.grid, base)
        configs.update({_own_name(name, '--grid'): flags for name, flags in grid.items()})
        default = ['baseline', *grid, *(name for name in configs if name not in BUILT_IN and name not in grid)]
    else:
        default = [*DEFAULT_CONFIGS, *(name for name in configs if name not in BUILT_IN)]
    chosen = args.configs or default
    unknown = [name for name in chosen if name not in configs]
    if unknown:
        raise SweepError(f'unknown configuration(s) {", ".join(unknown)}; defined: {", ".join(configs)}')
    for name in chosen:
        if not re.fullmatch(r'[A-Za-z0-9_.-]+', name) or name.startswith('.'):
            raise SweepError(f'configuration name {name!r}: use letters, digits, ., - and _')
    return {name: configs[name] for name in chosen}


def plan(args, common, device='cpu', threads=1):
    """Every (configuration, seed) run with its train.py flags (``threads`` CPU threads each), checked by
    train.py's own parser for the kind of device the runs will get ('cpu' or 'cuda')."""
    configs = configurations(args)
    for flag in common + [f for flags in configs.values() for f in flags]:
        if flag.split('=')[0] in SWEEP_CONTROLLED:
            own = ' (sweep.py\'s own --threads, before --, sets it)' if flag.startswith('--threads') else ''
            raise SweepError(f'{flag} is set by the sweep for every run; leave it out{own}')
    runs = []
    parser = train_flags.build_parser(raise_errors=True)
    for config, flags in configs.items():
        for seed in parse_seeds(args.seeds):
            name = f'{config}_seed{seed}'
            argv = [*common, *flags, '--name', name, '--seed', str(seed), '--path', args.path,
                    '--threads', str(threads), '--resume']
            try:
                parsed = train_flags.parse_args(argv + ['--device', device], parser)
            except UsageError as error:
                raise SweepError(f'train.py flags: {error}') from None
            runs.append({'config': config, 'seed': seed, 'name': name, 'argv': argv,
                         'settings': run_config(parsed),
                         'paths': output_paths(parsed.path, parsed.dataset, name, parsed.data_dir)})
    if args.task_index is not None:
        if not 0 <= args.task_index < len(runs):
            raise SweepError(f'--task_index {args.task_index}: the sweep has runs 0..{len(runs) - 1}')
        runs = [runs[args.task_index]]
    return runs


def state(run):
    """'finished', 'resume' or 'new' (results.standing); a run whose recorded experiment settings differ from the
    planned ones (experiment.experiment_settings, num_epochs included) is refused: its result is not this sweep's."""
    now = standing(run['paths'])
    if now.record is not None:
        differences = setting_differences(now.record.get('config', {}), run['settings'])
        if differences:
            raise SweepError(f"{run['name']} already has {'finished' if now.kind == 'finished' else 'unfinished'} "
                             f"results made with other settings ({'; '.join(differences)}) in "
                             f"{run['paths']['json']}: use another --path or configuration name")
    return 'new' if now.kind == 'unfinished' else now.kind


def slots(args):
    """(device flag, CUDA_VISIBLE_DEVICES) for every run that may go at once, and the CPU threads of each: the
    cores shared out evenly, so that the runs together never keep more threads busy than there are cores."""
    gpus = torch.cuda.device_count() if args.gpus is None else args.gpus
    cores = usable_cores()
    if gpus == 0:
        jobs = args.cpu_jobs or max(1, cores // (args.threads or 1))
        return [('cpu', None)] * jobs, args.threads or max(1, cores // jobs)
    # Keep a scheduler's own GPU assignment (SLURM sets CUDA_VISIBLE_DEVICES to the allocated ids).
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    ids = [i.strip() for i in visible.split(',') if i.strip()] if visible else [str(i) for i in range(gpus)]
    if gpus > len(ids):
        raise SweepError(f'--gpus {gpus}: only {plural(len(ids), "GPU")} visible ({", ".join(ids)})')
    slot_list = [('cuda', ids[gpu]) for gpu in range(gpus) for _ in range(args.runs_per_gpu)]
    return slot_list, args.threads or max(1, cores // len(slot_list))


def last_error_line(log_path):
    """The last line of the log's latest session that tells an error (train.py's one 'error:' line, or a traceback's
    last line), or its last line; '' for an empty or unreadable log."""
    try:
        with open(log_path, 'rb') as f:
            f.seek(max(0, os.path.getsize(log_path) - 65536))
            text = f.read().decode('utf-8', 'replace')
    except OSError:
        return ''
    lines = text.rsplit('\n=== ', 1)[-1].splitlines()[1:] if '=== ' in text else text.splitlines()
    session = [line.strip() for line in lines if line.strip()]
    errors = [line for line in session if 'error' in line.lower() or line.startswith(('Traceback', 'Killed'))]
    return (errors or session or [''])[-1][:300]


def ended_by(status, log_path):
    """How a run's process ended, in one line, the same way for every run: the signal by name (a status of -N, or
    128 + N as train.py and shells exit after signal N), else the exit status and the last error line of its log."""
    signals = {s.value for s in signal.Signals}
    signum = -status if status < 0 else status - 128 if status - 128 in signals else None
    if signum in signals:
        return f'stopped by {signal.Signals(signum).name}'
    line = last_error_line(log_path)
    return f'exit {status}' + (f': {line}' if line else '')


def _sweep_lock(run):
    """The lock a sweep takes on a run while it trains it (beside train.py's own, which train.py takes)."""
    return os.path.join(run['paths']['results'], f".{run['name']}.sweep.lock")


def _holder(lock):
    """Who holds ``lock``, in words, or None."""
    owner = lock.holder()
    return owner and f"process {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')})"


class Sweep:
    def __init__(self, runs, slot_list):
        self.runs, self.free = runs, list(slot_list)
        self.lock, self.running, self.stopping = threading.Lock(), {}, None
        self.results = {}

    def _run(self, run):
        """Train one run on a free slot, unless another process holds it: a second sweep of the same runs, or a
        train.py started by hand. That run is left to its owner and reported as such, and only the process that
        trains a run writes its log."""
        claim = RunLock({**run['paths'], 'lock': _sweep_lock(run)})
        held = _holder(RunLock(run['paths']))
        if not held:
            try:
                claim.acquire()
            except RunError:
                held = _holder(claim) or 'another sweep'
        if held:
            self.results[run['name']] = 'held'
            print(f"{run['name']}: not started here: it is being trained by {held}", flush=True)
            return
        try:
            if is_finished(read_record(run['paths']['json'])):  # another process finished it meanwhile
                self.results[run['name']] = 'finished'
                return
            self._train(run)
        finally:
            claim.release()

    def _train(self, run):
        with self.lock:
            if self.stopping is not None:
                self.results[run['name']] = 'not started'
                return
            device, visible = self.free.pop()
        try:
            log_path = _log_path(run)
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            command = train_command(run, device)
            env = dict(os.environ, PYTHONUNBUFFERED='1')
            if visible is not None:
                env['CUDA_VISIBLE_DEVICES'] = visible
            with open(log_path, 'a') as log:
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
                log.flush()
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                with self.lock:
                    self.running[run['name']] = process
                status = process.wait()
            with self.lock:
                self.running.pop(run['name'], None)
            self._report(run, status, f"{device}{'' if visible is None else ':' + visible}", log_path)
        finally:
            with self.lock:
                self.free.append((device, visible))

    def _report(self, run, status, where, log_path):
        record, holder = read_record(run['paths']['json']), _holder(RunLock(run['paths']))
        if status == 0 and is_finished(record):
            result, self.results[run['name']] = f'finished: {outcome(record)}', 'finished'
        elif self.stopping is not None:
            result, self.results[run['name']] = f'interrupted ({ended_by(status, log_path)}); the same command ' \
                f'resumes it', 'interrupted'
        elif holder:  # a train.py started by hand took the run first
            result, self.results[run['name']] = f'not trained here: it is being trained by {holder}', 'held'
        else:
            result, self.results[run['name']] = f'FAILED ({ended_by(status, log_path)}); log {log_path}', 'failed'
        print(f"{run['name']} on {where}: {result}", flush=True)

    def stop(self, signum, frame):
        with self.lock:
            self.stopping = signum
            for process in self.running.values():
                process.send_signal(signal.SIGTERM)  # each run checkpoints at its next step boundary

    def go(self):
        handlers = {s: signal.signal(s, self.stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            with ThreadPoolExecutor(max_workers=len(self.free)) as pool:
                list(pool.map(self._run, self.runs))
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
        return self.results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index('--') if '--' in argv else len(argv)
    own, common = argv[:split], argv[split + 1:]
    p = OneLineParser(prog='sweep.py', usage='%(prog)s [sweep flags] -- [train.py flags for every run]',
                      description=__doc__.split('\n\n')[0] + " train.py's own flags (--dataset, --network, "
                      "--num_epochs, ...) go after '--' and reach every run.")
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
    p.add_argument('--path', default=os.path.join('.', 'training', ''), help='train.py --path of every run')
    p.add_argument('--gpus', type=int, default=None, help='GPUs to use (default: all visible; 0 runs on CPU)')
    p.add_argument('--runs_per_gpu', type=int, default=1, help='concurrent runs per GPU')
    p.add_argument('--cpu_jobs', type=int, default=None,
                   help=f'without a GPU: runs at once (default: one per core this process may use, {usable_cores()} '
                        'here, divided by --threads)')
    p.add_argument('--threads', type=int, default=None,
                   help='CPU threads of each run (default: the cores shared out among the runs at once: 1 per CPU '
                        'job; on GPUs, the cores per GPU run); recorded in each run\'s results')
    p.add_argument('--task_index', type=int, default=None,
                   help='run only the run with this index (0-based), e.g. $SLURM_ARRAY_TASK_ID in a job array')
    p.add_argument('--dry_run', action='store_true', help='print the runs and their state, run nothing')
    p.add_argument('--no_report', action='store_true', help='skip report.py at the end')
    p.add_argument('--baseline', default='baseline', help='the configuration the report tests the others against')
    p.add_argument('--may_differ', nargs='+', default=[], metavar='SETTING',
                   help="the report's --may_differ: protocol settings the configurations vary on purpose")
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
    args, unknown = p.parse_known_args(own)
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)} (train.py's flags go after '--': sweep.py "
                f"[sweep flags] -- {' '.join(unknown)})")
    if args.runs_per_gpu < 1 or (args.gpus is not None and args.gpus < 0):
        p.error('--runs_per_gpu must be >= 1 and --gpus >= 0')
    if (args.cpu_jobs is not None and args.cpu_jobs < 1) or (args.threads is not None and args.threads < 1):
        p.error('--cpu_jobs and --threads must be >= 1')
    try:
        slot_list, threads = slurm_slots(args) if args.slurm else slots(args)
        runs = plan(args, common, slot_list[0][0], threads)
        states = [state(run) for run in runs]
    except SweepError as error:
        p.error(str(error))
    if args.slurm and not args.dry_run:
        try:
            return on_slurm(args, runs, states, slot_list[0][0])
        except SweepError as error:
            p.error(str(error))
    if args.dry_run:
        for index, (run, run_state) in enumerate(zip(runs, states)):
            print(f"[{index}] {run_state:>8}  python train.py {shlex.join(run['argv'])}")
        print(f'{plural(len(runs), "run")}, {states.count("finished")} finished; '
              f'{len(slot_list)} at a time on {slot_list[0][0]}, {plural(threads, "thread")} each')
        return 0
    todo = [run for run, run_state in zip(runs, states) if run_state != 'finished']
    print(f'{plural(len(runs), "run")}: {len(runs) - len(todo)} already finished, {len(todo)} to do, '
          f'{len(slot_list)} at a time on {slot_list[0][0]}, {plural(threads, "thread")} each', flush=True)
    sweep = Sweep(todo, slot_list)
    ended = sweep.go()
    if sweep.stopping is not None:
        print(f'sweep stopped by {signal.Signals(sweep.stopping).name}; run the same command again to resume',
              file=sys.stderr)
        return 128 + sweep.stopping
    failed = summarize_ended(ended)
    if not args.no_report and args.task_index is None:
        write_sweep_report(runs, args.baseline, args.may_differ)
    return 1 if failed else 0


def slurm_slots(args):
    """The device and threads of every run on SLURM: its task's GPU or the CPU, its task's CPUs."""
    problems = [f'--{name} must be >= {least}' for name, least in (('time', 1), ('cpus_per_task', 1),
                                                                  ('gpus_per_task', 0), ('array_parallelism', 1))
                if getattr(args, name) < least]
    problems += [f'--slurm_parameter {item!r}: use KEY=VALUE' for item in args.slurm_parameter if '=' not in item]
    if args.task_index is not None:
        problems.append('--task_index picks one run inside a job array of your own; --slurm submits the array')
    if problems:
        raise SweepError('; '.join(problems))
    return [('cuda' if args.gpus_per_task else 'cpu', None)], args.cpus_per_task


def train_command(run, device):
    """The train.py command of a planned run on a device of the kind ``device`` ('cpu' or 'cuda')."""
    return [sys.executable, os.path.join(HERE, 'train.py'), *run['argv'], '--device', device]


def on_slurm(args, runs, states, device):
    """Submit every unfinished run that no earlier submission still has queued, as one job array; then wait for
    the array with a progress line and write the report, as a local sweep does (or, with --no_wait, say how)."""
    problem = slurm_available()
    if problem:
        raise SweepError(f'--slurm: {problem}')
    folder = os.path.join(os.path.dirname(runs[0]['paths']['results']), 'slurm')
    earlier = read_ledger(folder)
    alive = queued([earlier[run['name']] for run in runs if run['name'] in earlier])
    todo = [run for run, run_state in zip(runs, states)
            if run_state != 'finished' and earlier.get(run['name']) not in alive]
    tasks = {run['name']: TrainTask(run['name'], train_command(run, device), _log_path(run)) for run in todo}
    options = {'partition': args.partition, 'time': args.time, 'cpus_per_task': args.cpus_per_task,
               'gpus_per_task': args.gpus_per_task, 'array_parallelism': args.array_parallelism,
               'additional': dict(item.split('=', 1) for item in args.slurm_parameter)}
    # The tasks unpickle TrainTask from this checkout: its folder on their path (sbatch passes the environment on).
    os.environ['PYTHONPATH'] = os.pathsep.join([HERE, *filter(None, [os.environ.get('PYTHONPATH')])])
    submitted = submit(tasks, folder, options) if tasks else {}
    waiting = len([run for run in runs if earlier.get(run['name']) in alive])
    array = f" ({next(iter(submitted.values())).split('_')[0]})" if submitted else ''
    print(f'{plural(len(runs), "run")}: {states.count("finished")} already finished, {len(submitted)} submitted as '
          f'one SLURM job array{array}, {waiting} still queued from an earlier submission', flush=True)
    report = f'python {os.path.join(HERE, "report.py")} {os.path.dirname(runs[0]["paths"]["json"])} --out ' \
             f'{os.path.join(os.path.dirname(runs[0]["paths"]["results"]), "report")}'
    if args.no_wait:
        print(f'not waiting; once the tasks are done: {report} (or run this sweep again: it submits nothing twice, '
              f'waits and reports)')
        return 0
    task_ids = {**{name: earlier[name] for name in earlier if earlier[name] in alive}, **submitted}
    failed = wait(Progress(runs, task_ids))
    for run in failed:
        task = task_ids.get(run['name'], '?')
        why = last_error_line(_log_path(run)) or last_error_line(os.path.join(folder, task, f'{task}_0_log.err'))
        print(f"{run['name']}: FAILED on SLURM (task {task}: {why or 'no log'}); log {_log_path(run)}",
              file=sys.stderr)
    if not args.no_report:
        write_sweep_report(runs, args.baseline, args.may_differ)
    return 1 if failed else 0


def _log_path(run):
    return os.path.join(os.path.dirname(run['paths']['results']), 'logs', f"{run['name']}.log")


def summarize_ended(ended):
    """Say how the runs this sweep tried ended (failed, and left to other processes); returns the failed ones."""
    by = {kind: sorted(name for name, result in ended.items() if result == kind) for kind in ('failed', 'held')}
    if by['failed']:
        finished = sum(result == 'finished' for result in ended.values())
        rest = f'the other {plural(finished, "run")} finished' if finished else 'none finished'
        every = len(by['failed']) == len(ended)
        print(f'{"all " if every and len(ended) > 1 else ""}{plural(len(by["failed"]), "run")} failed: '
              f'{", ".join(by["failed"])} (see their logs){"" if every else "; " + rest}', file=sys.stderr)
    if by['held']:
        print(f'{plural(len(by["held"]), "run")} left to the processes training them ({", ".join(by["held"])}); '
              f'run this sweep again once they have finished, for a report with them', file=sys.stderr)
    return by['failed']


def write_sweep_report(runs, baseline, may_differ=()):
    import report
    files = [run['paths']['json'] for run in runs if os.path.exists(run['paths']['json'])]
    out = os.path.join(os.path.dirname(runs[0]['paths']['results']), 'report')
    if not files:
        print(f'sweep.py: no report: none of the {plural(len(runs), "run")} has results yet', file=sys.stderr)
        return
    try:
        text, not_made = report.write_report(load_runs(files), out, baseline, may_differ=may_differ)
    except ResultsError as error:
        print(f'sweep.py: no report: {error}', file=sys.stderr)
        return
    print(text, end='')
    print(f'report written to {out}' + ''.join(f'; {figure} not made: {why}' for figure, why in not_made.items()))


if __name__ == '__main__':
    with exit_on_error('sweep.py'):
        sys.exit(main())
