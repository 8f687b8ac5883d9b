"""A run's life: where it stands (new, resume, finished, cannot resume), how it starts and ends, what it writes when.

train.py and sweep.py read a run's standing here, from its files, the same way. While a run
trains, ``RunOutputs`` is the one place that writes what an epoch leaves: the best weights, the
checkpoint, the results files (results.write_results) and whatever else is told of each epoch (a
listener: a tracker such as TensorBoard), in that order, on a background thread; and the one place
that marks the record when a run fails or is stopped. checkpoint.py only says what a checkpoint
holds and how it is restored. Where a run stands is read without importing torch (a sweep plans with it);
starting and writing a run import checkpoint.py, and torch with it.
"""
import os
import signal
import sys
import threading
from dataclasses import dataclass

from .cli import USAGE, RunError, Stopped, describe, plural
from .experiment import setting_differences
from .results import is_finished, read_record, record_failure, write_results
from .runs import BackgroundWriter

__all__ = ['Standing', 'standing', 'Start', 'find_start', 'sweep_state', 'RunStopped', 'StopOnSignal', 'RunOutputs',
           'saved_so_far']


@dataclass
class Standing:
    """Where a run stands, from its files: its results record (or None), whether it has results and a checkpoint."""
    record: dict
    has_results: bool
    has_checkpoint: bool

    @property
    def kind(self):
        """'finished', 'resume' (a checkpoint to continue from), 'unfinished' (results but no checkpoint: it cannot be
        resumed, only trained again) or 'new'."""
        if is_finished(self.record):
            return 'finished'
        if self.has_checkpoint:
            return 'resume'
        return 'unfinished' if self.has_results else 'new'


def standing(paths):
    """Where the run whose files are ``paths`` (runs.run_files) stands."""
    return Standing(read_record(paths['json']), os.path.exists(paths['json']), os.path.exists(paths['checkpoint']))


@dataclass
class Start:
    """Where a run starts: ``kind`` is 'new', 'resume' (from ``checkpoint``) or 'finished' (with ``record``)."""
    kind: str
    checkpoint: dict = None
    record: dict = None


def find_start(args, paths):
    """How train.py's run of ``args`` starts, from where its files say it stands.

    Without --resume, existing results or a checkpoint are never overwritten unless
    --overwrite says so. With --resume, the checkpoint must come from the same
    experiment (experiment.differing_settings) and, unless --change_num_epochs, the same
    number of epochs; a finished run is reported, not retrained.
    """
    from .checkpoint import CheckpointError, load_checkpoint
    now = standing(paths)
    if not args.resume:
        if now.kind == 'new':
            return Start('new')
        _check_same_experiment(args, paths, now.record)
        if args.overwrite:
            return Start('new')
        raise CheckpointError(f'{args.name} already has {"finished" if now.kind == "finished" else "unfinished"} '
                              f'results in {paths["results"]}: add --resume to continue it, or --overwrite to train '
                              f'it again from scratch', status=USAGE)
    if not now.has_checkpoint:
        if now.kind == 'finished':
            return Start('finished', record=now.record)
        if now.kind == 'unfinished':
            raise CheckpointError(f'cannot resume {args.name}: it has results but no checkpoint '
                                  f'({paths["checkpoint"]}); use --overwrite instead to train it again',
                                  status=USAGE)
        return Start('new')
    checkpoint = load_checkpoint(paths['checkpoint'])
    _check_resumable(args, checkpoint)
    if checkpoint['completed_epochs'] >= args.num_epochs:
        return Start('finished', record=checkpoint['record'])
    return Start('resume', checkpoint=checkpoint)


def _check_same_experiment(args, paths, record):
    """Refuse to start, or --overwrite, a run whose existing files come from another experiment (another network,
    seed, ...): they are another result, and only a new --name keeps both."""
    from .checkpoint import CheckpointError, load_checkpoint
    saved = record.get('config') if record else None
    if saved is None and os.path.exists(paths['checkpoint']):
        saved = load_checkpoint(paths['checkpoint'])['config']
    differences = setting_differences(saved or {}, vars(args))
    if not differences:
        return
    more_epochs = differences == [f'num_epochs: {saved["num_epochs"]!r} -> {args.num_epochs!r}'] and \
        args.num_epochs > saved['num_epochs']
    hint = '; --resume --change_num_epochs continues it to the new number of epochs' if more_epochs else ''
    raise CheckpointError(f'{args.name} already holds the results of a different experiment in {paths["results"]} '
                          f'({"; ".join(differences)}): give this run its own --name{hint}'
                          + (' (--overwrite replaces a run of the same experiment only)' if args.overwrite else ''),
                          status=USAGE)


def _check_resumable(args, checkpoint):
    """Refuse a checkpoint of another experiment; num_epochs only moves the schedule's end, so it is apart."""
    from .checkpoint import CheckpointError
    differences = setting_differences(checkpoint['config'], vars(args), ignore=('num_epochs',))
    if differences:
        raise CheckpointError(f'cannot resume {args.name}: its checkpoint was made with other settings '
                              f'({"; ".join(differences)}); use the original flags or another --name', status=USAGE)
    saved_epochs, completed = checkpoint['config']['num_epochs'], checkpoint['completed_epochs']
    if args.num_epochs != saved_epochs and not args.change_num_epochs:
        raise CheckpointError(f'cannot resume {args.name}: --num_epochs {args.num_epochs} differs from the '
                              f'checkpoint\'s {saved_epochs}, which changes the cosine schedule; add '
                              f'--change_num_epochs to accept that', status=USAGE)
    if args.num_epochs < completed:
        raise CheckpointError(f'cannot resume {args.name} with --num_epochs {args.num_epochs}: '
                              f'{plural(completed, "epoch")} {"is" if completed == 1 else "are"} already done',
                              status=USAGE)


def sweep_state(name, settings, paths):
    """Where a planned sweep run stands: 'finished', 'resume', 'new', or 'restart' (unfinished results without a
    checkpoint: they cannot be resumed, so the run is trained again from its start). A run whose recorded experiment
    settings differ from the planned ones (num_epochs included) is refused: its result is not this sweep's."""
    now = standing(paths)
    if now.record is not None:
        differences = setting_differences(now.record.get('config', {}), settings)
        if differences:
            raise RunError(f"{name} already has {'finished' if now.kind == 'finished' else 'unfinished'} results made "
                           f"with other settings ({'; '.join(differences)}) in {paths['json']}: give this sweep a "
                           f"home of its own (--sweep NAME) or its configuration another name", USAGE)
    return 'restart' if now.kind == 'unfinished' else now.kind


class RunStopped(RunError):
    """A signal stopped the run after its checkpoint and results were written (status 128 + signal)."""


class StopOnSignal:
    """SIGTERM (cluster preemption) and SIGINT (Ctrl-C) ask the training loop to stop at the next step boundary, where
    it can write a checkpoint; a second signal stops at once (cli.Stopped), keeping the last saved epoch."""

    def __enter__(self):
        self.received, self.previous = None, {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise Stopped(signum)
        self.received = signum

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False


def saved_so_far(completed_epochs):
    return (f'keeping the checkpoint and results of epoch {completed_epochs}' if completed_epochs
            else 'before any epoch ended: nothing was saved')


class RunOutputs:
    """What a training run writes, in one place. ``save`` takes a CPU snapshot of the run (checkpoint_state) and
    writes, on a background thread while the next epoch trains: the best weights (when they just improved), the
    checkpoint, the results files, then tells each listener (``listeners``: objects with ``epoch(record)``) and
    prints the epoch's line. A crash in between leaves the checkpoint ahead of the results, and resuming redoes
    the epoch; a line in the log is an epoch that a resume will not redo. Writes nothing where ``enabled`` is false
    (torchrun processes other than rank 0).

    As a context manager it waits for the last write on exit, and a run that fails (a full disk, a non-finite loss,
    any error) or is stopped at once says so in its results JSON, which would otherwise still say 'running' for the
    last saved epoch."""

    def __init__(self, paths, model, enabled=True, listeners=(), told=0):
        self.paths, self.model, self.enabled, self.listeners = paths, model, enabled, list(listeners)
        self.writer, self.told, self.last = BackgroundWriter(), told, None  # the last epoch told, the last record

    def save(self, record, completed_epochs, best_weights=False, announce=None):
        if self.enabled:
            from .checkpoint import checkpoint_state
            state = checkpoint_state(record, self.model, completed_epochs)
            state['tracking'] = {key: value for listener in self.listeners for key, value in listener.ids().items()}
            self.writer.submit(self._write, state, best_weights, announce)

    def _write(self, state, best_weights, announce):
        from .checkpoint import save_torch
        if best_weights:
            save_torch(state['network'], self.paths['weights'])
        save_torch(state, self.paths['checkpoint'])
        write_results(self.paths, state['record'])
        self.last = state['record']
        if state['completed_epochs'] > self.told:  # a new epoch (a stop's save repeats the last one)
            self.told = state['completed_epochs']
            for listener in self.listeners:
                listener.epoch(state['record'])
        if announce:
            print(('\r\x1b[K' if sys.stdout.isatty() else '') + announce, flush=True)  # over any progress bar

    def already_finished(self, record):
        """A finished run met again: its results written once more (its checkpoint may be one write ahead)."""
        if self.enabled:
            write_results(self.paths, record)

    def __enter__(self):
        self.writer.__enter__()
        return self

    def __exit__(self, exc_type, error, traceback):
        self.writer.__exit__(exc_type, error, traceback)
        stopped = exc_type is not None and issubclass(exc_type, (RunStopped, Stopped, KeyboardInterrupt))
        status = 'finished' if exc_type is None else 'interrupted' if stopped else 'failed'
        if self.last is not None:
            for listener in self.listeners:
                listener.close(self.last, status)
        if exc_type is None or issubclass(exc_type, RunStopped):  # a stop at a step boundary has said 'interrupted'
            return False
        if self.enabled:
            record_failure(self.paths, status, 'interrupted' if stopped else describe(error))
        if isinstance(error, OSError):  # a full disk, a vanished folder: what was saved before stays whole
            raise RunError(f'{describe(error)}; the files of the last saved epoch are intact: once that is mended, '
                           f'add --resume to continue') from None
        return False
