"""Crash-safe files and resumable checkpoints.

Every file a run writes goes through ``atomic_write``: a temporary file in the
same folder, flushed to disk, then renamed over the target, so a crash at any
moment leaves either the previous complete file or the new complete one.

A checkpoint holds everything needed to continue a run exactly: model,
optimizer (with its lr/c group), scheduler, the position in training (epoch and
step), every RNG state, the metrics so far and the configuration. RNG states
are stored as tensors and lists so that checkpoints load with
``torch.load(weights_only=True)``: no arbitrary pickled objects.
"""
import os
import random
import sys
import threading

import numpy as np
import torch

from results import is_finished, read_record

__all__ = ['CHECKPOINT_FORMAT', 'EXPERIMENT_SETTINGS', 'CheckpointError', 'atomic_write', 'write_text',
           'save_torch', 'rng_states', 'restore_rng_states', 'load_checkpoint', 'config_differences',
           'find_start', 'cpu_copy', 'checkpoint_state', 'BackgroundWriter', 'restore_checkpoint']

CHECKPOINT_FORMAT = 'revisiting-bn-checkpoint-v2'  # v2: the original code's data order (torch's generator)
# Settings that define the experiment: a resumed run must use the same ones. Paths, names, the
# device and --no_cuda_graph may change; num_epochs only when the user allows it explicitly.
EXPERIMENT_SETTINGS = ('dataset', 'network', 'batch_size', 'learning_rate', 'scheduler', 'momentum',
                       'weight_decay', 'bn_weight', 'c', 'input_norm', 'seed', 'fake_size', 'precision',
                       'channels_last', 'sync_bn')


USAGE, FAILURE = 2, 1  # exit statuses: a usage error (flags); a problem with files, data or training


class CheckpointError(Exception):
    """A checkpoint is corrupt, foreign, or does not match the requested run."""

    def __init__(self, message, status=FAILURE):
        super().__init__(message)
        self.status = status


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


def save_torch(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


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
        raise CheckpointError(f'checkpoint {path} is corrupt or unreadable '
                              f'({type(error).__name__}: {str(error).splitlines()[0][:200]})') from None
    if isinstance(checkpoint, dict) and checkpoint.get('format') == 'revisiting-bn-checkpoint-v1':
        raise CheckpointError(f'{path} was written by an older train.py whose data order differs from the '
                              f'original code\'s; finish that run with the version that started it, or --overwrite')
    if not isinstance(checkpoint, dict) or checkpoint.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(f'{path} is not a train.py checkpoint (no {CHECKPOINT_FORMAT!r} marker)')
    missing = [k for k in ('config', 'network', 'optimizer', 'record', 'rng', 'completed_epochs', 'steps_done')
               if k not in checkpoint]
    if missing:
        raise CheckpointError(f'checkpoint {path} is incomplete: it lacks {", ".join(missing)}')
    return checkpoint


def config_differences(saved, current, keys=EXPERIMENT_SETTINGS):
    """'key: saved -> current' for every experiment setting that differs."""
    return [f'{key}: {saved.get(key)!r} -> {current.get(key)!r}' for key in keys
            if saved.get(key) != current.get(key)]


def find_start(args, paths):
    """How a run starts: ('new', None), ('resume', checkpoint) or ('finished', results record).

    Without --resume, existing results or a checkpoint are never overwritten unless
    --overwrite says so. With --resume, the checkpoint must come from the same
    experiment (EXPERIMENT_SETTINGS) and, unless --change_num_epochs, the same
    number of epochs; a finished run is reported, not retrained.
    """
    record = read_record(paths['json'])
    has_results = os.path.exists(paths['json'])
    has_checkpoint = os.path.exists(paths['checkpoint'])
    if not args.resume:
        if args.overwrite or not (has_results or has_checkpoint):
            return 'new', None
        state = 'finished' if is_finished(record) else 'unfinished'
        raise CheckpointError(f'{args.name} already has {state} results in {paths["results"]}: add --resume to '
                              f'continue it, or --overwrite to train it again from scratch', status=USAGE)
    if not has_checkpoint:
        if is_finished(record):
            return 'finished', record
        if has_results:
            raise CheckpointError(f'cannot resume {args.name}: it has results but no checkpoint '
                                  f'({paths["checkpoint"]}); use --overwrite instead to train it again',
                                  status=USAGE)
        return 'new', None
    checkpoint = load_checkpoint(paths['checkpoint'])
    differences = config_differences(checkpoint['config'], vars(args))
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
                              f'{completed} epochs are already done', status=USAGE)
    if completed >= args.num_epochs:
        return 'finished', checkpoint['record']
    return 'resume', checkpoint


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


def checkpoint_state(record, network, optimizer, scheduler, train_step, completed_epochs, steps_done=0,
                     epoch_start_rng=None):
    """Everything needed to continue, at an epoch boundary or mid-epoch after ``steps_done`` steps,
    as a CPU snapshot that can be written while training goes on."""
    mid_epoch = None
    if steps_done:
        mid_epoch = {'epoch_start_rng': epoch_start_rng, 'loss_sum': train_step.loss_sum,
                     'step_losses': train_step.step_losses}
    return cpu_copy({
        'format': CHECKPOINT_FORMAT, 'config': record['config'], 'record': record,
        'completed_epochs': completed_epochs, 'steps_done': steps_done, 'mid_epoch': mid_epoch,
        'network': network.state_dict(), 'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict() if scheduler is not None else None,
        'grad_scaler': train_step.scaler_state(),
        'rng': rng_states(),
    })


class BackgroundWriter:
    """Runs file writes on one background thread, so the GPU trains the next epoch while a checkpoint
    (about 90 MB for ResNet-18 with its momentum buffers) is serialised and synced to disk.

    Jobs run one at a time, in order: ``submit`` first waits for the previous one. The
    error of a failed job is raised in the training thread at the next ``submit`` or
    ``wait``. As a context manager it waits for the last job on exit; when the block
    is already failing, that error wins and a write error is only reported on stderr.
    """

    def __init__(self):
        self._thread, self._error = None, None

    def _run(self, job, args):
        try:
            job(*args)
        except BaseException as error:  # handed to the training thread
            self._error = error

    def submit(self, job, *args):
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(job, args), name='checkpoint-writer')
        self._thread.start()

    def wait(self):
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.wait()
            return False
        try:
            self.wait()
        except Exception as error:
            print(f'also failed to write a file: {error}', file=sys.stderr)
        return False


def restore_checkpoint(checkpoint, args, network, optimizer, scheduler, train_step):
    network.load_state_dict(checkpoint['network'])
    optimizer.load_state_dict(checkpoint['optimizer'])
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint['scheduler'])
        scheduler.T_max = args.num_epochs  # differs only with --change_num_epochs
    if train_step.scaler is not None and checkpoint['grad_scaler']:
        train_step.scaler.load_state_dict(checkpoint['grad_scaler'])
    restore_rng_states(checkpoint['rng'])
    mid_epoch = checkpoint['mid_epoch']
    if checkpoint['steps_done']:
        train_step.begin_epoch(checkpoint['steps_done'], mid_epoch['loss_sum'], mid_epoch['step_losses'])
        return mid_epoch['epoch_start_rng']
    return None
