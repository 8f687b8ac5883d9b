"""A sweep's runs on this machine: one per free slot (a GPU or a CPU core), each run's log, and how each ended.

One run per visible GPU at a time (and --runs_per_gpu per GPU); without a GPU, one
single-thread run per core (--cpu_jobs, --threads), which trains the most images per second on
a CPU. Each run is a process of its own, in a session of its own, so that a terminal's Ctrl-C
reaches the sweep only: the sweep passes the signal on to every run once, and each run
checkpoints at its next step and stops. A failed run is reported and the others go on; each
run's output goes to its log (runs.run_files: {home}/{dataset}/logs/{name}.log).

On the CPU a run is a child of a worker that imported PyTorch and this package once (``Workers``:
Python's multiprocessing forkserver, preloaded), so a short run does not pay seconds of imports
before its first step; it is otherwise the train.py process it replaces: its own log, signals,
thread count and exit status, and the same results, bit for bit. A crash of one run ends that
child only. On GPUs (CUDA and fork do not mix) each run is a train.py process.
"""
import atexit
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .cli import STOP_SIGNALS, RunError, plural
from .cpu_threads import usable_cores
from .names import RESNETS, TORCHVISION
from .results import is_finished, outcome, read_record
from .runs import RunLock

__all__ = ['visible_gpus', 'slots', 'train_command', 'launch_process', 'Workers', 'last_error_line', 'ended_by', 'LocalSweep', 'summarize_ended']

TRAIN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'train.py')


def slots(gpus, runs_per_gpu=1, cpu_jobs=None, threads=None):
    """(device flag, CUDA_VISIBLE_DEVICES) for every run that may go at once, and the CPU threads of each: the
    cores shared out evenly, so that the runs together never keep more threads busy than there are cores. ``gpus``
    is how many GPUs to use (0: the CPU)."""
    cores = usable_cores()
    if gpus == 0:
        jobs = cpu_jobs or max(1, cores // (threads or 1))
        return [('cpu', None)] * jobs, threads or max(1, cores // jobs)
    # Keep a scheduler's own GPU assignment (SLURM sets CUDA_VISIBLE_DEVICES to the allocated ids).
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    ids = [i.strip() for i in visible.split(',') if i.strip()] if visible else [str(i) for i in range(gpus)]
    if gpus > len(ids):
        raise RunError(f'--gpus {gpus}: only {plural(len(ids), "GPU")} visible ({", ".join(ids)})', 2)
    slot_list = [('cuda', ids[gpu]) for gpu in range(gpus) for _ in range(runs_per_gpu)]
    return slot_list, threads or max(1, cores // len(slot_list))


def visible_gpus():
    """How many GPUs PyTorch sees: asked of torch only where an NVIDIA driver is there (no GPU: no torch to import)."""
    if not (os.path.exists('/proc/driver/nvidia') or os.path.exists('/dev/nvidia0')) and 'torch' not in sys.modules:
        return 0
    import torch
    return torch.cuda.device_count()


def train_command(run, device):
    """The train.py command of a planned run on a device of the kind ``device`` ('cpu' or 'cuda')."""
    return [sys.executable, TRAIN_PY, *run['argv'], '--device', device]


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


def _holder(lock):
    """Who holds ``lock``, in words, or None."""
    owner = lock.holder()
    return owner and f"process {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')})"


def _header(log, command):
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
    log.flush()


def launch_process(run, device, visible, log):
    """A run as a train.py process of its own session, its output into the open ``log``."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if visible is not None:
        env['CUDA_VISIBLE_DEVICES'] = visible
    command = train_command(run, device)
    _header(log, command)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _run_child(argv, log_path, cwd, environment):
    """A run inside a child of the workers' forkserver: a session of its own, the sweep's folder and environment of
    now, its output into its log, then train.py's own entry (its exit status is the child's)."""
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environment)
    descriptor = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for stream in (1, 2):
        os.dup2(descriptor, stream)
    os.close(descriptor)
    sys.stdout = open(1, 'w', buffering=1, closefd=False)  # line by line, as PYTHONUNBUFFERED gives train.py
    sys.stderr = open(2, 'w', buffering=1, closefd=False)
    sys.argv = [TRAIN_PY, *argv]
    import runpy
    runpy.run_path(TRAIN_PY, run_name='__main__')  # `python train.py argv`, its imports already done


class _Child:
    """A worker's child as LocalSweep sees a process: wait() for its exit status, send_signal(signum).

    multiprocessing reads a forkserver child's exit status from a pipe, once, whenever anything asks (a join, and
    every start, which looks at all children); two threads asking at once leave one of them with 255, and a run
    that had finished was reported failed (2 of 600 no-op children in two threads, measured). So every look at a
    status, and every start, holds the workers' ``lock``; waiting itself is on the pipe, without reading it."""

    def __init__(self, process, lock):
        self.process, self.pid, self.lock = process, process.pid, lock

    def wait(self):
        from multiprocessing.connection import wait
        while True:
            wait([self.process.sentinel])
            with self.lock:
                status = self.process.exitcode
            if status is not None:
                return status

    def send_signal(self, signum):
        with self.lock:
            running = self.process.exitcode is None
        if running:
            os.kill(self.pid, signum)


class Workers:
    """CPU runs as children of one forkserver that imported PyTorch (torch._dynamo, which the optimizer's first step
    would import, included), the package's training modules and, where one of ``networks`` is built by it,
    torchvision, once: each run a fresh fork of it."""
    PRELOAD = ['torch', 'torch._dynamo', *(f'revisiting_bn.{module}' for module in (
        'lifecycle', 'checkpoint', 'networks', 'engine', 'fast_path', 'norm_statistics', 'data', 'flags',
        'distributed', 'weight_decay_and_learning_rate', 'tracking', 'sweep_local'))]

    def __init__(self, networks=RESNETS):
        import multiprocessing
        self.context, self.lock = multiprocessing.get_context('forkserver'), threading.Lock()
        torchvision = any(network in RESNETS or str(network).startswith(TORCHVISION) for network in networks)
        self.context.set_forkserver_preload(self.PRELOAD[:1] + ['torchvision'] * torchvision + self.PRELOAD[1:])
        from multiprocessing import forkserver
        forkserver.ensure_running()  # its imports start now, on one core, while this process goes on
        atexit.unregister(_end_forkserver)
        atexit.register(_end_forkserver)

    def launch(self, run, device, visible, log):
        _header(log, train_command(run, device))
        return self.start(_run_child, [*run['argv'], '--device', device], log.name, os.getcwd(), dict(os.environ))

    def start(self, target, *args):
        """``target(*args)`` in a fresh child of the workers, as a _Child."""
        child = self.context.Process(target=target, args=args, daemon=False)
        with self.lock:
            child.start()
        return _Child(child, self.lock)


def _end_forkserver():
    """At the sweep's exit, the forkserver killed and reaped: it only forks, and every run is a session of its own.
    Left to itself it would run its own interpreter's exit after the sweep's, with PyTorch loaded (0.8-1.3 s on a
    2-core Intel Xeon), and keep the sweep's output open meanwhile, so that a pipe from the sweep waited for it."""
    from multiprocessing import forkserver
    pid = getattr(getattr(forkserver, '_forkserver', None), '_forkserver_pid', None)
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


class LocalSweep:
    """Trains ``runs`` on ``slot_list`` (slots), as many at once as there are slots; ``launch(run, device, visible,
    log)`` starts one and returns a process (wait, send_signal). ``go`` returns {run name: how it ended}."""

    def __init__(self, runs, slot_list, launch=launch_process):
        self.runs, self.free, self.launch = runs, list(slot_list), launch
        self.lock, self.running, self.stopping = threading.Lock(), {}, None
        self.results = {}

    def _run(self, run):
        """Train one run on a free slot, unless another process holds it: a second sweep of the same runs, or a
        train.py started by hand. That run is left to its owner and reported as such, and only the process that
        trains a run writes its log."""
        claim = RunLock({**run['paths'], 'lock': run['paths']['sweep_lock']})
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
            os.makedirs(os.path.dirname(run['paths']['log']), exist_ok=True)
            with open(run['paths']['log'], 'a') as log:
                with self.lock:
                    process = self.running[run['name']] = self.launch(run, device, visible, log)
                    if self.stopping is not None:  # the stop came while it was starting
                        process.send_signal(self.stopping)
                status = process.wait()
            with self.lock:
                self.running.pop(run['name'], None)
            self._report(run, status, f"{device}{'' if visible is None else ':' + visible}")
        finally:
            with self.lock:
                self.free.append((device, visible))

    def _report(self, run, status, where):
        record, holder = read_record(run['paths']['json']), _holder(RunLock(run['paths']))
        if status == 0 and is_finished(record):
            result, self.results[run['name']] = f'finished: {outcome(record)}', 'finished'
        elif self.stopping is not None:
            result, self.results[run['name']] = f"interrupted ({ended_by(status, run['paths']['log'])}); the same " \
                f"command resumes it", 'interrupted'
        elif holder:  # a train.py started by hand took the run first
            result, self.results[run['name']] = f'not trained here: it is being trained by {holder}', 'held'
        else:
            result, self.results[run['name']] = f"FAILED ({ended_by(status, run['paths']['log'])}); log " \
                f"{run['paths']['log']}", 'failed'
        print(f"{run['name']} on {where}: {result}", flush=True)

    def stop(self, signum, frame):
        """The sweep's stop: each running run gets the same signal once, and checkpoints at its next step."""
        with self.lock:
            if self.stopping is not None:
                return
            self.stopping = signum
            for process in self.running.values():
                process.send_signal(signum)

    def go(self):
        handlers = {s: signal.signal(s, self.stop) for s in STOP_SIGNALS} \
            if threading.current_thread() is threading.main_thread() else {}
        try:
            with ThreadPoolExecutor(max_workers=len(self.free)) as pool:
                list(pool.map(self._run, self.runs))
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
        return self.results


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
