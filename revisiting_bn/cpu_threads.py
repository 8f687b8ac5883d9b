"""CPU threads: how many a run uses, and whether the cores it would use are already busy.

Two multi-threaded PyTorch processes on the same cores do not share them gracefully: each
one's OpenMP threads spin while waiting for threads the other process has pushed off a
core, and both slow down 5-25x (docs/threads.md has the measurements). Single-threaded
runs, one per core, do not suffer this. So a run's thread count is a setting (``--threads``,
fixed for a machine, never adapted to the load: it changes the CPU's rounding), and a run
that would oversubscribe the cores says so before it trains.

What keeps the cores busy is found two ways: CPU time measured in /proc/stat on the cores
this process may use (any program), and the CPU runs of train.py that have announced
themselves in a shared folder (which counts a run that has started but is still loading).
"""
import json
import os
import tempfile
import time

from .cli import plural
from .runs import process_alive, process_start

__all__ = ['usable_cores', 'default_threads', 'set_threads', 'CpuRun', 'busy_cores', 'oversubscription']

# torch's own default (all cores, or OMP_NUM_THREADS), read once, before anything in this process changes it: at the
# first default_threads(), which train.py asks before it sets its threads (torch is imported only then).
_TORCH_DEFAULT = None
REGISTRY_ENV = 'REVISITING_BN_RUNS_DIR'  # where CPU runs announce themselves (default: a folder in the temp dir)


def _affinity():
    """The ids of the cores this process may run on (taskset, cpusets and SLURM narrow them), or None (not Linux)."""
    return os.sched_getaffinity(0) if hasattr(os, 'sched_getaffinity') else None


def usable_cores():
    """How many cores this process may run on."""
    cores = _affinity()
    return len(cores) if cores is not None else os.cpu_count() or 1


def default_threads():
    """--threads when not given: OMP_NUM_THREADS if set, else torch's default capped at the usable cores.
    It depends on the machine and the environment only, never on what else is running."""
    global _TORCH_DEFAULT
    value = os.environ.get('OMP_NUM_THREADS', '').strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    if _TORCH_DEFAULT is None:
        import torch
        _TORCH_DEFAULT = torch.get_num_threads()
    return max(1, min(_TORCH_DEFAULT, usable_cores()))


def set_threads(threads):
    """Use ``threads`` threads for torch's CPU work (its OpenMP and MKL pools)."""
    import torch
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _registry():
    folder = os.environ.get(REGISTRY_ENV) or os.path.join(tempfile.gettempdir(), 'revisiting-bn-cpu-runs')
    if not os.path.isdir(folder):
        os.makedirs(folder, exist_ok=True)
        try:
            os.chmod(folder, 0o1777)  # shared by every user, like /tmp itself
        except OSError:
            pass
    return folder


def _registered_threads(folder, own):
    """Threads of the other live CPU runs announced in ``folder``; files of dead processes are removed."""
    total = 0
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        try:
            with open(path) as f:
                run = json.load(f)
            pid, threads, start = int(run['pid']), int(run['threads']), run.get('process_start')
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid == own:
            continue
        if process_alive(pid, start):
            total += threads
        else:
            try:
                os.remove(path)
            except OSError:
                pass
    return total


def _cpu_ticks(cores):
    """Busy clock ticks so far, summed over ``cores`` (from /proc/stat), or None where there is no /proc."""
    try:
        with open('/proc/stat') as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith('cpu') and name[3:].isdigit() and int(name[3:]) in cores:
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
            busy += user + nice + system + irq + softirq + steal
    return busy


class _Sample:
    """Busy time on this process's cores, and this process's own CPU time, at one moment."""

    def __init__(self):
        self.ticks, self.own, self.at = _cpu_ticks(_affinity() or set()), sum(os.times()[:2]), time.monotonic()


def busy_cores(since, least_seconds=0.3):
    """Cores kept busy by other processes since the _Sample ``since`` (waiting until ``least_seconds`` have
    passed), rounded to whole cores; None where /proc/stat cannot tell."""
    time.sleep(max(0.0, least_seconds - (time.monotonic() - since.at)))
    now = _Sample()
    if since.ticks is None or now.ticks is None:
        return None
    others = (now.ticks - since.ticks) / os.sysconf('SC_CLK_TCK') - (now.own - since.own)
    return max(0, round(others / (now.at - since.at)))


class CpuRun:
    """A CPU run announced in the shared folder while it lives, so that runs starting beside it count it as
    busy before it has done any work (two runs started within a second of each other see each other)."""

    def __init__(self, threads):
        self.threads, self.path, self.sample = threads, None, _Sample()

    def __enter__(self):
        try:
            folder = _registry()
            self.path = os.path.join(folder, f'{os.getpid()}.json')
            with open(self.path, 'w') as f:
                json.dump({'pid': os.getpid(), 'process_start': process_start(os.getpid()), 'threads': self.threads,
                           'since': time.time()}, f)
        except OSError:  # no shared folder: only the measured load counts
            self.path = None
        return self

    def others(self):
        """Cores taken by other processes: measured, or announced by other runs, whichever is more."""
        measured = busy_cores(self.sample) or 0
        try:
            announced = _registered_threads(os.path.dirname(self.path), os.getpid()) if self.path else 0
        except OSError:
            announced = 0
        return max(measured, announced)

    def __exit__(self, *exc):
        if self.path:
            try:
                os.remove(self.path)
            except OSError:
                pass
        return False


def oversubscription(threads, busy, cores=None):
    """The warning for a run of ``threads`` threads on ``cores`` cores of which ``busy`` are taken (a number, or a
    function that measures it), or None. One thread never collapses (it never waits for a descheduled sibling), so
    only several threads warn, and only for them is the load measured (CpuRun.others waits 0.3 s to measure it)."""
    cores = cores or usable_cores()
    if threads <= 1:
        return None
    busy = busy() if callable(busy) else busy
    if busy + threads <= cores:
        return None
    advice = max(1, cores - busy)
    return (f'WARNING: {busy} of the {plural(cores, "core")} this run may use are already busy (other training '
            f'runs or programs), so its {threads} threads would oversubscribe them and every run on them could slow '
            f'down 5-25x; use --threads {advice} (one single-thread run per free core makes the most images per '
            f'second; the thread count changes the CPU\'s rounding, so keep it for the whole run)')
