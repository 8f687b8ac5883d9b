"""The cluster path: a sweep's runs as one SLURM job array through submitit, and their state read from squeue.

Every (configuration, seed) that is not finished becomes one array task, which runs the same
``train.py ... --resume`` command a local sweep runs, its output appended to the run's log. When
SLURM preempts or requeues a task it sends SIGTERM: train.py checkpoints at its next step and exits,
and the requeued task resumes from that checkpoint, so the run ends bit-identical to an uninterrupted
one; at a time limit submitit requeues the task the same way (``TrainTask.checkpoint``). The run
folders must be on a filesystem that every node shares. Where accounting is off (``sacct``: "accounting
storage is disabled") submitit cannot tell a task's state, so it is read from ``squeue`` and from the
runs' own results: queued or running while squeue lists the task, then finished (its results say
so) or failed (named with the last error line of its log).
"""
import json
import os
import shlex
import subprocess
import sys
import time

from .cli import RunError, Stopped, plural, stops_raise
from .results import is_finished, outcome, read_record
from .sweep_local import last_error_line

__all__ = ['SLURM_DEFAULTS', 'TrainTask', 'slurm_available', 'queued', 'submit', 'Progress', 'StoppedWaiting', 'wait',
           'slurm_options', 'run_on_slurm']

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout, whose train.py the tasks run

SLURM_DEFAULTS = {'partition': None, 'time': 60, 'cpus_per_task': 1, 'gpus_per_task': 0, 'array_parallelism': 256}


class TrainTask:
    """One sweep run inside a SLURM task: train.py as a child process, its output appended to the run's log."""

    def __init__(self, name, command, log_path):
        self.name, self.command, self.log_path = name, list(command), log_path

    def __call__(self):
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        where = f"slurm job {os.environ.get('SLURM_JOB_ID', '?')} task {os.environ.get('SLURM_ARRAY_TASK_ID', '?')}"
        with open(self.log_path, 'a') as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} ({where}) {shlex.join(self.command)}\n")
            log.flush()
            status = subprocess.call(self.command, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, 'PYTHONUNBUFFERED': '1'})
        if status:
            raise RuntimeError(f'{self.name}: train.py exited with status {status}; see {self.log_path}')
        return self.name

    def checkpoint(self, *args, **kwargs):
        """At a time limit (submitit's signal): requeue the same command; train.py resumes from its checkpoint."""
        import submitit
        return submitit.helpers.DelayedSubmission(self)


def slurm_available():
    """Why SLURM cannot take a sweep here, or None: sbatch, squeue and submitit must be at hand."""
    from shutil import which
    missing = [tool for tool in ('sbatch', 'squeue', 'scontrol') if which(tool) is None]
    if missing:
        return f'no SLURM here ({", ".join(missing)} not found)'
    try:
        import submitit  # noqa: F401
    except ImportError:
        return 'submitit is not installed (pip install -r requirements.txt)'
    return None


def queued(job_ids):
    """{task id: SLURM state} of the tasks among ``job_ids`` ('123_4') that squeue still lists (pending, running,
    completing, requeued ...)."""
    arrays = sorted({job_id.split('_')[0] for job_id in job_ids})
    if not arrays:
        return {}
    try:
        listed = subprocess.run(['squeue', '-h', '-r', '-o', '%i %T', '-j', ','.join(arrays)], capture_output=True,
                                text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        raise RunError(f'squeue did not answer: {error}') from None
    states = dict(line.split(None, 1) for line in listed.stdout.splitlines() if ' ' in line)
    return {job_id: states[job_id].strip() for job_id in job_ids if job_id in states}


def _ledger(folder):
    return os.path.join(folder, 'jobs.json')


def read_ledger(folder):
    """{run name: task id} of the sweep's earlier submissions from ``folder``."""
    try:
        with open(_ledger(folder)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def submit(tasks, folder, options):
    """Submit ``tasks`` ({run name: TrainTask}) as one job array; returns {run name: task id}, also kept in the
    folder's ledger so that a second sweep of the same runs finds them queued."""
    import submitit
    executor = submitit.AutoExecutor(folder=os.path.join(folder, '%j'), cluster='slurm')
    parameters = {'timeout_min': options['time'], 'cpus_per_task': options['cpus_per_task'],
                  'slurm_array_parallelism': options['array_parallelism'], 'name': 'revisiting-bn-sweep',
                  'slurm_additional_parameters': dict(options.get('additional') or {})}
    if options.get('partition'):
        parameters['slurm_partition'] = options['partition']
    if options.get('gpus_per_task'):
        parameters['slurm_gpus_per_task'] = options['gpus_per_task']
    executor.update_parameters(**parameters)
    names, jobs = list(tasks), []
    with executor.batch():
        for name in names:
            jobs.append(executor.submit(tasks[name]))
    submitted = {name: job.job_id for name, job in zip(names, jobs)}
    ledger = {**read_ledger(folder), **submitted}
    os.makedirs(folder, exist_ok=True)
    with open(_ledger(folder) + '.tmp', 'w') as f:
        json.dump(ledger, f, indent=1)
    os.replace(_ledger(folder) + '.tmp', _ledger(folder))
    return submitted


class Progress:
    """Where the sweep's SLURM tasks stand: pending, running, done (finished results) or failed; each run that has
    finished since the last look is named with its result, as a local sweep names it."""

    def __init__(self, runs, task_ids):
        self.runs, self.task_ids, self.done = runs, task_ids, set()

    def counts(self, say=None):
        states = queued(list(self.task_ids.values()))
        counts, failed = {'pending': 0, 'running': 0, 'done': 0, 'failed': 0}, []
        for run in self.runs:
            state = states.get(self.task_ids.get(run['name']))
            record = None if state is not None else read_record(run['paths']['json'])
            if state is not None:
                counts['running' if state in ('RUNNING', 'COMPLETING') else 'pending'] += 1
            elif is_finished(record):
                counts['done'] += 1
                if say is not None and run['name'] not in self.done:
                    say(f"{run['name']} on SLURM (task {self.task_ids.get(run['name'], '?')}): finished: "
                        f"{outcome(record)}")
                self.done.add(run['name'])
            else:
                counts['failed'] += 1
                failed.append(run)
        return counts, failed

    def still_queued(self):
        """{run name: (task id, SLURM state)} of the sweep's tasks that squeue still lists."""
        states = queued(list(self.task_ids.values()))
        return {name: (task, states[task]) for name, task in self.task_ids.items() if task in states}

    @staticmethod
    def line(counts):
        return f"slurm: {counts['pending']} pending, {counts['running']} running, {counts['done']} done, " \
               f"{counts['failed']} failed"


class StoppedWaiting(RunError):
    """A Ctrl-C (or SIGTERM) while sweep.py waited for its SLURM tasks, which go on on the cluster."""


def _left_on_cluster(progress, stop):
    """What a stopped wait leaves: the tasks still queued or running, how to cancel them, how to wait again."""
    left = progress.still_queued()
    arrays = sorted({task.split('_')[0] for task, _ in left.values()})
    if not left:
        return StoppedWaiting(f'stopped waiting by {stop.name}; no task of the sweep is queued or running any more: '
                              f'the same command reports', stop.status)
    tasks = ', '.join(f'{name} ({task} {state.lower()})' for name, (task, state) in sorted(left.items()))
    return StoppedWaiting(
        f'stopped waiting by {stop.name}: {plural(len(left), "task")} of SLURM job '
        f'array{"s" if len(arrays) > 1 else ""} '
        f'{" and ".join(arrays)} still queued or running on the cluster, where they go on: {tasks}. To cancel them: '
        f'scancel {" ".join(arrays)}. The same command waits for them again (it submits nothing twice) and reports',
        stop.status)


def wait(progress, poll_s=1.0, out=None):
    """Wait until no task of the sweep is queued or running, printing a progress line whenever it changes and each
    run as it finishes; returns the runs that ended without finished results. A stop signal (Ctrl-C) while waiting
    raises StoppedWaiting, which says what goes on on the cluster."""
    last, say = None, lambda line: print(line, file=out or sys.stdout, flush=True)  # noqa: E731
    try:
        with stops_raise():
            while True:
                counts, failed = progress.counts(say)
                line = progress.line(counts)
                if line != last:
                    say(line)
                    last = line
                if not counts['pending'] and not counts['running']:
                    return failed
                time.sleep(poll_s)
    except Stopped as stop:
        raise _left_on_cluster(progress, stop) from None


def slurm_options(args):
    """The SLURM parameters of sweep.py's flags, checked: a one-line SweepError-like RunError (status 2) otherwise."""
    problems = [f'--{name} must be >= {least}' for name, least in (('time', 1), ('cpus_per_task', 1),
                                                                  ('gpus_per_task', 0), ('array_parallelism', 1))
                if getattr(args, name) < least]
    problems += [f'--slurm_parameter {item!r}: use KEY=VALUE' for item in args.slurm_parameter if '=' not in item]
    if args.task_index is not None:
        problems.append('--task_index picks one run inside a job array of your own; --slurm submits the array')
    if problems:
        raise RunError('; '.join(problems), 2)
    return {'partition': args.partition, 'time': args.time, 'cpus_per_task': args.cpus_per_task,
            'gpus_per_task': args.gpus_per_task, 'array_parallelism': args.array_parallelism,
            'additional': dict(item.split('=', 1) for item in args.slurm_parameter)}


def run_on_slurm(plan, options, command_of, no_wait=False, report_command=''):
    """Submit every unfinished run of ``plan`` (sweep_plan.Plan) that no earlier submission still has queued, as one
    job array (``command_of(run)``: its train.py command); then wait for the array with a progress line, or, with
    ``no_wait``, say how to report once it is done. Returns the runs that failed (None when not waiting)."""
    problem = slurm_available()
    if problem:
        raise RunError(f'--slurm: {problem}', 2)
    folder, runs = plan.files['slurm'], plan.runs
    earlier = read_ledger(folder)
    alive = queued([earlier[run['name']] for run in runs if run['name'] in earlier])
    todo = [run for run in runs if run['state'] != 'finished' and earlier.get(run['name']) not in alive]
    tasks = {run['name']: TrainTask(run['name'], command_of(run), run['paths']['log']) for run in todo}
    # The tasks unpickle TrainTask from this checkout: its folder on their path (sbatch passes the environment on).
    os.environ['PYTHONPATH'] = os.pathsep.join([ROOT, *filter(None, [os.environ.get('PYTHONPATH')])])
    submitted = submit(tasks, folder, options) if tasks else {}
    waiting = len([run for run in runs if earlier.get(run['name']) in alive])
    array = f" ({next(iter(submitted.values())).split('_')[0]})" if submitted else ''
    finished = sum(run['state'] == 'finished' for run in runs)
    print(f'{plural(len(runs), "run")}: {finished} already finished, {len(submitted)} submitted as one SLURM job '
          f'array{array}, {waiting} still queued from an earlier submission', flush=True)
    if no_wait:
        print(f'not waiting; once the tasks are done: {report_command} (or run this sweep again: it submits nothing '
              f'twice, waits and reports)')
        return None
    task_ids = {**{name: earlier[name] for name in earlier if earlier[name] in alive}, **submitted}
    failed = wait(Progress(runs, task_ids))
    for run in failed:
        task = task_ids.get(run['name'], '?')
        why = last_error_line(run['paths']['log']) or last_error_line(os.path.join(folder, task, f'{task}_0_log.err'))
        print(f"{run['name']}: FAILED on SLURM (task {task}: {why or 'no log'}); log {run['paths']['log']}",
              file=sys.stderr)
    return failed
