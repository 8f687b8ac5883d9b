"""A run's files on disk: where they go, how each is written (atomically), and the lock that keeps a run to one process.

With --path P, --dataset D and --name N:
  P/D/images/              the dataset files (or --data_dir)
  P/D/networks/N-best.pt   state_dict of the best-validation epoch
  P/D/networks/N-last.pt   checkpoint to resume from (see checkpoint.py)
  P/D/results/N.txt, .csv, .json the results, N.norm_statistics.csv the per-layer statistics (see results.py)
  P/D/logs/N.log           the run's console output, when a sweep runs it
A sweep named S under --path P is the home P/S: its runs are train.py runs with --path P/S, and
beside them it keeps P/S/sweep.json (what it is), P/S/report/ and P/S/slurm/ (``sweep_files``).
Every file goes through ``atomic_write``: a temporary file in the same folder,
flushed to disk, then renamed over the target, so a crash at any moment leaves
either the previous complete file or the new complete one.
"""
import json
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from .cli import USAGE, RunError

__all__ = ['DEFAULT_PATH', 'WRITTEN', 'SWEEP_MANIFEST', 'output_paths', 'run_files', 'sweep_files', 'sweep_home_of',
           'files_of_weights', 'atomic_write', 'write_text', 'BackgroundWriter', 'check_writable', 'process_start',
           'process_alive', 'RunLock']

DEFAULT_PATH = os.path.join('.', 'training', '')  # train.py's and sweep.py's --path when none is given
SWEEP_MANIFEST = 'sweep.json'  # the file that makes a folder a sweep's home


# The files of run_files that a run writes (the lock aside): what --overwrite removes.
WRITTEN = ('checkpoint', 'weights', 'json', 'csv', 'statistics_csv', 'txt')


def output_paths(path, dataset, name, data_dir=None):
    """Every file of the run named ``name`` under ``--path``/``--dataset``."""
    return run_files(os.path.join(path, dataset), name, data_dir)


def run_files(root, name, data_dir=None):
    """The run's files under ``root`` (the folder that holds images/, networks/ and results/)."""
    return {
        'images': data_dir or os.path.join(root, 'images'),
        'networks': os.path.join(root, 'networks'),
        'results': os.path.join(root, 'results'),
        'weights': os.path.join(root, 'networks', f'{name}-best.pt'),
        'checkpoint': os.path.join(root, 'networks', f'{name}-last.pt'),
        'txt': os.path.join(root, 'results', f'{name}.txt'),
        'csv': os.path.join(root, 'results', f'{name}.csv'),
        'statistics_csv': os.path.join(root, 'results', f'{name}.norm_statistics.csv'),
        'json': os.path.join(root, 'results', f'{name}.json'),
        'lock': os.path.join(root, 'results', f'.{name}.lock'),
        'sweep_lock': os.path.join(root, 'results', f'.{name}.sweep.lock'),  # a sweep's claim while it trains the run
        'log': os.path.join(root, 'logs', f'{name}.log'),
    }


def sweep_files(home):
    """A sweep's own files in its home (the --path of its runs): what it is, its report, its SLURM submissions."""
    return {'home': home, 'manifest': os.path.join(home, SWEEP_MANIFEST), 'report': os.path.join(home, 'report'),
            'slurm': os.path.join(home, 'slurm')}


def sweep_home_of(results_file):
    """The home of the sweep whose run wrote ``results_file`` (HOME/D/results/N.json, HOME holding the sweep's
    manifest), or None for a run made outside a sweep."""
    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(results_file))))
    return home if os.path.isfile(os.path.join(home, SWEEP_MANIFEST)) else None


def files_of_weights(weights):
    """The files of the run whose best weights or checkpoint is ``weights`` (P/D/networks/N-best.pt or N-last.pt),
    as train.py wrote them, or None for a file of another name."""
    folder, file = os.path.split(os.path.abspath(weights))
    for suffix in ('-best.pt', '-last.pt'):
        if file.endswith(suffix) and len(file) > len(suffix):
            return run_files(os.path.dirname(folder), file[:-len(suffix)])
    return None


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, sync it, then rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f'.{os.path.basename(path)}.tmp{os.getpid()}')
    try:
        with open(temporary, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as error:  # name the file being written (a failed write() names none, open() the temporary)
        if error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, path) from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    try:  # make the rename itself durable
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError:
        pass


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode('utf-8')))


class BackgroundWriter:
    """Runs file writes on one background thread (concurrent.futures), so the GPU trains the next epoch while a
    checkpoint (about 90 MB for ResNet-18 with its momentum buffers) is serialised and synced to disk.

    Jobs run one at a time, in order: ``submit`` first waits for the previous one, so at most
    one is in flight. The error of a failed job is raised in the training thread at the next
    ``submit`` or ``wait``. As a context manager it waits for the last job on exit; when the
    block is already failing, that error wins and a write error is only reported on stderr.
    """

    def __init__(self):
        self._pool, self._pending = None, None

    def submit(self, job, *args):
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix='checkpoint-writer')
        self._pending = self._pool.submit(job, *args)

    def wait(self):
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        try:
            if exc_type is None:
                self.wait()
            else:
                try:
                    self.wait()
                except Exception as error:
                    print(f'also failed to write a file: {error}', file=sys.stderr)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        return False


def check_writable(folder):
    """A one-line reason why ``folder`` could not be created or written, or None. Creates nothing."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f'cannot create {folder}: {existing} is a file, not a folder'
    if not os.access(existing, os.W_OK | os.X_OK):
        return f'cannot write to {folder}: {existing} is not writable'
    return None


def process_start(pid):
    """When process ``pid`` started (clock ticks since boot, from /proc), or None where that cannot be read."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid, start):
    """Whether process ``pid`` on this host still runs and is the one that took the lock (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return start is None or process_start(pid) in (None, start)


class RunLock:
    """An exclusive lock on a run's name for the whole life of the process that trains it.

    The lock is a file created with O_EXCL (atomic, also on shared network folders) beside
    the results, holding the host, pid and start time of its owner. A second process for the
    same name is refused with one line naming them (exit 2). A lock left by a process that
    died on this host (SIGKILL, a crash) is reclaimed; one from another host cannot be
    checked from here, so the message says how to remove it if its owner is gone. Folders
    the lock had to create are removed again on release if the run left nothing in them.
    """

    def __init__(self, paths):
        self.path, self.folders, self.created = paths['lock'], (paths['networks'], paths['results']), []

    def _owner(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def holder(self):
        """Who holds the lock now (host, pid, since), or None: nobody, or a process of this host that died."""
        owner = self._owner()
        if not owner:
            return None
        if owner.get('host') == socket.gethostname() and not process_alive(owner.get('pid'), owner.get('process_start')):
            return None
        return owner

    def acquire(self):
        try:
            return self._acquire()
        except BaseException:
            self.release()  # a refusal, or an error such as a name too long for the file system: leave nothing
            raise

    def _acquire(self):
        for folder in self.folders:
            missing = []
            while not os.path.isdir(folder):
                missing.append(folder)
                folder = os.path.dirname(folder)
            for folder in reversed(missing):
                try:
                    os.mkdir(folder)
                except FileExistsError:  # made a moment ago by a run started beside this one
                    continue
                self.created.append(folder)
        me = {'host': socket.gethostname(), 'pid': os.getpid(), 'process_start': process_start(os.getpid()),
              'since': time.strftime('%Y-%m-%d %H:%M:%S')}
        for _ in range(2):  # a second try after reclaiming a stale lock
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                for _ in range(20):  # its owner may have created it a moment ago and not written itself in yet
                    if owner:
                        break
                    time.sleep(0.05)
                    owner = self._owner()
                stale = owner and owner.get('host') == me['host'] and not process_alive(owner.get('pid'),
                                                                                  owner.get('process_start'))
                if stale:
                    os.remove(self.path)  # its process died: the lock is stale
                    continue
                held = (f"process {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')})" if owner
                        else 'another process')
                remote = owner and owner.get('host') != me['host']
                raise RunError(f'{os.path.basename(self.path)[1:-5]} is being trained by {held}: lock {self.path}'
                               + ('; if that process is gone, delete the lock' if remote else ''), USAGE) from None
            with os.fdopen(descriptor, 'w') as f:
                json.dump(me, f)
            return self
        raise RunError(f'could not take the lock {self.path}', USAGE)

    def release(self):
        owner = self._owner()
        if owner and owner.get('pid') == os.getpid() and owner.get('host') == socket.gethostname():
            os.remove(self.path)
        for folder in reversed(self.created):  # nothing written: leave no empty folders behind
            try:
                os.rmdir(folder)
            except OSError:
                pass
        self.created = []

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
