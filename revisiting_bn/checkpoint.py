"""Checkpoints: what a run saves to continue exactly where it stopped, and how that is restored.

A checkpoint holds everything needed to continue a run exactly: model,
optimizer (with its lr/c group), scheduler, the position in training (epoch, and
within it the epoch's steps done and losses), every RNG state, the metrics so far
and the configuration. RNG states are stored as tensors and lists so that
checkpoints load with ``torch.load(weights_only=True)``: no arbitrary pickled objects.
Every file is written by ``runs.atomic_write``, so a crash leaves the previous one whole.
"""
import io
import random

import numpy as np
import torch

from .cli import RunError
from .runs import atomic_write

__all__ = ['CHECKPOINT_FORMAT', 'CheckpointError', 'save_torch', 'rng_states', 'restore_rng_states',
           'load_checkpoint', 'cpu_copy', 'checkpoint_state', 'restore_checkpoint']

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
