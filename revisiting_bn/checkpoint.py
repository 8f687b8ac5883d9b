"""Checkpoints: what a run saves after each epoch, how it is restored, and where a run starts.

A checkpoint holds everything needed to continue a run exactly: model,
optimizer (with its lr/c group), scheduler, the position in training (epoch, and
within it the epoch's steps done and losses), every RNG state, the metrics so far
and the configuration. RNG states are stored as tensors and lists so that
checkpoints load with ``torch.load(weights_only=True)``: no arbitrary pickled objects.
Every file is written by ``runs.atomic_write``, so a crash leaves the previous one whole.
"""
import io
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .cli import USAGE, RunError, plural
from .experiment import setting_differences
from .results import standing, write_results
from .runs import atomic_write

__all__ = ['CHECKPOINT_FORMAT', 'CheckpointError', 'save_torch', 'rng_states', 'restore_rng_states',
           'load_checkpoint', 'cpu_copy', 'checkpoint_state', 'restore_checkpoint', 'BackgroundWriter',
           'CheckpointSaver', 'Start', 'find_start']

CHECKPOINT_FORMAT = 'revisiting-bn-checkpoint-v2'  # v2: the original code's data order (torch's generator)


class CheckpointError(RunError):
    """A checkpoint is corrupt, foreign, or does not match the requested run."""


def save_torch(obj, path):
    """torch.save into memory, then the bytes to ``path``: a full disk is then the operating system's OSError
    (ENOSPC, naming the file), not a RuntimeError from torch's zip writer."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def rng_states():
    """Python, NumPy, torch CPU (which also draws the data order) and CUDA generator states."""
    version, state, gauss = random.getstate()
    key, mt, position, has_gauss, cached = np.random.get_state()
    return {
        'python': [version, list(state), gauss],
        'numpy': [key, torch.from_numpy(mt.astype(np.int64)), position, has_gauss, cached],
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states):
    version, state, gauss = states['python']
    random.setstate((version, tuple(state), gauss))
    key, mt, position, has_gauss, cached = states['numpy']
    np.random.set_state((key, mt.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states['torch'])
    if states['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'][:torch.cuda.device_count()])


def load_checkpoint(path):
    """Load and sanity-check a checkpoint written by train.py; CheckpointError otherwise."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:
        first = (str(error).strip().splitlines() or [''])[0].split('. ')[0].rstrip('.')  # its first whole sentence
        raise CheckpointError(f'checkpoint {path} is corrupt or unreadable ({type(error).__name__}: {first}); '
                              f'--overwrite trains the run again from scratch') from None
    if isinstance(checkpoint, dict) and checkpoint.get('format') == 'revisiting-bn-checkpoint-v1':
        raise CheckpointError(f'{path} was written by an older train.py whose data order differs from the '
                              f'original code\'s; finish that run with the version that started it, or --overwrite')
    if not isinstance(checkpoint, dict) or checkpoint.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(f'{path} is not a train.py checkpoint (no {CHECKPOINT_FORMAT!r} marker)')
    missing = [k for k in ('config', 'network', 'optimizer', 'record', 'rng', 'completed_epochs', 'train_step')
               if k not in checkpoint]
    if missing:
        raise CheckpointError(f'checkpoint {path} is incomplete: it lacks {", ".join(missing)}')
    return checkpoint


def cpu_copy(obj):
    """A copy of nested dicts/lists/tuples with every tensor copied to the CPU: a snapshot that the
    in-place updates of further training cannot change."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to('cpu', copy=True)
    if isinstance(obj, dict):
        return type(obj)((key, cpu_copy(value)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(value) for value in obj)
    return obj


def checkpoint_state(record, model, completed_epochs):
    """Everything needed to continue ``model`` (train.Model) after ``completed_epochs`` epochs (and, mid-epoch,
    its position in the next one), as a CPU snapshot that can be written while training goes on."""
    scaler = model.step.scaler
    return cpu_copy({
        'format': CHECKPOINT_FORMAT, 'config': record['config'], 'record': record,
        'completed_epochs': completed_epochs,
        'train_step': {**model.epoch.state_dict(), 'loss_scaler': None if scaler is None else scaler.state_dict()},
        'network': model.network.state_dict(), 'optimizer': model.optimizer.state_dict(),
        'scheduler': model.scheduler.state_dict() if model.scheduler is not None else None,
        'rng': rng_states(),
    })


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


def restore_checkpoint(checkpoint, model, num_epochs):
    """Put ``model`` (train.Model) and every RNG back where the checkpoint left them."""
    model.network.load_state_dict(checkpoint['network'])
    model.optimizer.load_state_dict(checkpoint['optimizer'])
    if model.scheduler is not None:
        model.scheduler.load_state_dict(checkpoint['scheduler'])
        model.scheduler.T_max = num_epochs  # differs only with --change_num_epochs
    model.epoch.load_state_dict(checkpoint['train_step'])
    if model.step.scaler is not None and checkpoint['train_step']['loss_scaler']:
        model.step.scaler.load_state_dict(checkpoint['train_step']['loss_scaler'])
    restore_rng_states(checkpoint['rng'])


def _write_progress(paths, state, best_weights, announce):
    """The best weights (when they just improved), the checkpoint, then the results: a crash in between
    leaves the checkpoint ahead of the results, and resuming redoes the epoch. ``announce`` (the epoch's
    log line) is printed only then, so an epoch in the log is an epoch that a resume will not redo."""
    if best_weights:
        save_torch(state['network'], paths['weights'])
    save_torch(state, paths['checkpoint'])
    write_results(paths, state['record'])
    if announce:
        print(('\r\x1b[K' if sys.stdout.isatty() else '') + announce, flush=True)  # over any progress bar


class CheckpointSaver:
    """Saves a run after each epoch, or when a signal stops it mid-epoch: a CPU snapshot now, the files
    (best weights, checkpoint, results) written by a BackgroundWriter while the next epoch trains. Saves
    nothing where ``enabled`` is false (torchrun processes other than rank 0). As a context manager it
    waits for the last write on exit."""

    def __init__(self, paths, model, enabled=True):
        self.paths, self.model, self.enabled = paths, model, enabled
        self.writer = BackgroundWriter()

    def save(self, record, completed_epochs, best_weights=False, announce=None):
        if self.enabled:
            state = checkpoint_state(record, self.model, completed_epochs)
            self.writer.submit(_write_progress, self.paths, state, best_weights, announce)

    def __enter__(self):
        self.writer.__enter__()
        return self

    def __exit__(self, *exc):
        return self.writer.__exit__(*exc)


@dataclass
class Start:
    """Where a run starts: ``kind`` is 'new', 'resume' (from ``checkpoint``) or 'finished' (with ``record``)."""
    kind: str
    checkpoint: dict = None
    record: dict = None


def find_start(args, paths):
    """How the run of ``args`` starts, from where its files say it stands (results.standing).

    Without --resume, existing results or a checkpoint are never overwritten unless
    --overwrite says so. With --resume, the checkpoint must come from the same
    experiment (experiment.differing_settings) and, unless --change_num_epochs, the same
    number of epochs; a finished run is reported, not retrained.
    """
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
