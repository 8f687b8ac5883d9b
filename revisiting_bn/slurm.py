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

from .cli import RunError
from .results import is_finished, read_record

__all__ = ['SLURM_DEFAULTS', 'TrainTask', 'slurm_available', 'queued', 'submit', 'Progress', 'wait']

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
    """Where the sweep's SLURM tasks stand: pending, running, done (finished results) or failed."""

    def __init__(self, runs, task_ids):
        self.runs, self.task_ids = runs, task_ids

    def counts(self):
        states = queued(list(self.task_ids.values()))
        counts, failed = {'pending': 0, 'running': 0, 'done': 0, 'failed': 0}, []
        for run in self.runs:
            state = states.get(self.task_ids.get(run['name']))
            if state is not None:
                counts['running' if state in ('RUNNING', 'COMPLETING') else 'pending'] += 1
            elif is_finished(read_record(run['paths']['json'])):
                counts['done'] += 1
            else:
                counts['failed'] += 1
                failed.append(run)
        return counts, failed

    @staticmethod
    def line(counts):
        return f"slurm: {counts['pending']} pending, {counts['running']} running, {counts['done']} done, " \
               f"{counts['failed']} failed"


def wait(progress, poll_s=1.0, out=None):
    """Wait until no task of the sweep is queued or running, printing a progress line whenever it changes; returns
    the runs that ended without finished results."""
    last = None
    while True:
        counts, failed = progress.counts()
        line = progress.line(counts)
        if line != last:
            print(line, file=out or sys.stdout, flush=True)
            last = line
        if not counts['pending'] and not counts['running']:
            return failed
        time.sleep(poll_s)

