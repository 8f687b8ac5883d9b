"""The training engine: the paper's training step, an epoch of steps with its position and losses, evaluation.

``Step`` is the original code's loop body (zero_grad, forward, loss, backward, SGD
update) and is what trains on the CPU; fast_path.py wraps it for fp16 and CUDA
graphs. Nothing here waits for the GPU inside an epoch: losses accumulate on the
device, a non-finite one is traced to its step after the epoch, and the progress
bar only counts steps.
"""
import contextlib
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .distributed import Distributed
from .names import PRECISION_NAMES

__all__ = ['PRECISIONS', 'autocast', 'Step', 'Epoch', 'train_one_epoch', 'evaluate_network', 'progress']

PRECISIONS = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16)))  # fp32 is no autocast
LOG_INTERVAL_S = 30     # progress lines in a log file (stdout not a terminal) come at most this often


def autocast(device, precision):
    """Mixed-precision context for ``precision`` ('fp32' means none). BN layers keep fp32 weights."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    # The autocast weight cache must be off inside CUDA graphs; it only saves work across
    # several forwards of one step, which this loop never does.
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype, cache_enabled=False)


class Step:
    """One training step of the paper's protocol: zero_grad, forward, loss, backward, torch.optim.SGD's step.

    Returns the batch's mean loss (times ``loss_weight``), detached, in float32. ``loss_weight``
    scales the loss that is backpropagated: data-parallel training uses it to weight a process's
    share of an unevenly split last batch. ``execution`` says which kind of step ran, and why; the
    results record it.
    """
    scaler = None  # fp16 loss scaling (fast_path.ScaledStep)

    def __init__(self, network, optimizer, criterion, precision='fp32', channels_last=False):
        self.network, self.optimizer, self.criterion = network, optimizer, criterion
        self.precision, self.channels_last = precision, channels_last
        self.execution = {'step': 'eager', 'why': 'asked for', 'check_deviation': None}

    def __call__(self, images, labels, loss_weight=1.0):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward_backward(images, labels, loss_weight)
        self.update()
        return loss

    def forward_backward(self, images, labels, loss_weight=1.0):
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, self.precision):
            loss = self.criterion(self.network(images), labels)
        if loss_weight != 1.0:
            loss = loss * loss_weight
        self.backward(loss)
        return loss.detach().float()

    def backward(self, loss):
        loss.backward()

    def update(self):
        self.optimizer.step()


class Epoch:
    """Where training stands within an epoch, and the epoch's losses: what lets a run stopped mid-epoch resume
    at its next step, exactly.

    The epoch's order and flips are drawn from torch's global generator: a new epoch remembers
    the generator's state, a restored one sets it back, so the same epoch is drawn again. On the
    device, ``loss_sum`` adds up each step's (mean) loss in float64 (exact promotion, as the
    original adds ``loss.item()`` in Python) and ``step_losses[i]`` holds step i's loss.
    """

    def __init__(self, steps, device):
        self.steps = steps  # per epoch: decided once, by train.py
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.step_losses = torch.zeros(steps, device=device)
        self.steps_done, self.in_epoch, self.start_rng = 0, False, None

    def begin(self):
        """Start an epoch, or go on with one restored mid-epoch; returns the index of its next step."""
        if self.in_epoch:
            torch.set_rng_state(self.start_rng)
            return self.steps_done
        self.start_rng = torch.get_rng_state()
        self.loss_sum.zero_()
        self.step_losses.zero_()
        self.steps_done, self.in_epoch = 0, True
        return 0

    def record(self, loss):
        self.loss_sum += loss
        self.step_losses[self.steps_done] = loss
        self.steps_done += 1

    def end(self):
        self.in_epoch = False

    def first_nonfinite_step(self):
        """Index (from 0) of the epoch's first step whose loss was NaN or inf, or None. Synchronises."""
        bad = (~torch.isfinite(self.step_losses[:self.steps_done])).nonzero()
        return int(bad[0]) if len(bad) else None

    def mean_loss(self, world=Distributed()):
        """The original's training loss: the mean over the epoch's batches of each batch's mean loss."""
        return world.sum(self.loss_sum.clone()).item() / world.world_size / self.steps_done

    def state_dict(self):
        return {'in_epoch': self.in_epoch, 'steps_done': self.steps_done, 'epoch_start_rng': self.start_rng,
                'loss_sum': self.loss_sum, 'step_losses': self.step_losses}

    def load_state_dict(self, state):
        self.in_epoch, self.steps_done, self.start_rng = state['in_epoch'], state['steps_done'], state[
            'epoch_start_rng']
        self.loss_sum.copy_(state['loss_sum'])
        self.step_losses.copy_(state['step_losses'])


class _LogLines:
    """A file for tqdm that turns its in-place updates ('\\r' + text) into plain lines, for log files
    (blank and repeated ones left out)."""

    def __init__(self, stream):
        self.stream, self.last = stream, None

    def write(self, text):
        text = text.replace('\r', '').strip()
        if text and text != self.last:
            self.stream.write(text + '\n')
            self.last = text

    def flush(self):
        self.stream.flush()


def progress(total, initial, label):
    """A tqdm bar (with rate and time left) on a terminal; in a log, a plain line at most every 30 s, the
    first after 30 s (a short epoch leaves only its summary line)."""
    if sys.stdout.isatty():
        return tqdm(total=total, initial=initial, desc=label, unit='step', leave=False, dynamic_ncols=True,
                    file=sys.stdout)
    return tqdm(total=total, initial=initial, desc=label, unit='step', leave=False, file=_LogLines(sys.stdout),
                mininterval=LOG_INTERVAL_S, delay=LOG_INTERVAL_S, miniters=1,
                bar_format='{desc}: {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}, {rate_fmt}]')


def train_one_epoch(step, epoch, batches, batch_size, stop=None, label='', world=Distributed()):
    """One pass over the shuffled, flipped training set, or the rest of one restored mid-epoch.

    Returns the number of the epoch's steps done: all of them, or fewer when ``stop``
    received a signal. Under torchrun each process trains on its shard of every batch;
    a share of an unevenly split last batch is weighted so that the averaged gradient
    is the whole batch's mean.
    """
    step.network.train()
    start = epoch.begin()
    with progress(epoch.steps, start, label) as bar:
        for images, labels, whole in batches.shuffled(batch_size, start_batch=start, shard=world.shard,
                                                      min_batch=world.world_size):
            epoch.record(step(images, labels, loss_weight=labels.shape[0] * world.world_size / whole))
            bar.update()
            if stop is not None and stop.received is not None and epoch.steps_done < epoch.steps:
                return epoch.steps_done
    epoch.end()
    return epoch.steps_done


@torch.no_grad()
def evaluate_network(network, batches, batch_size, precision='fp32', channels_last=False, world=Distributed()):
    """Mean loss and accuracy (percent) over a whole evaluation set, with running BN statistics.

    The original's arithmetic: batches of ``batch_size``, each batch's summed cross-entropy
    added in float64, divided by the set's size; accuracy is (correct / size) x 100. Nothing
    is read back until the end. Under torchrun each process evaluates a disjoint shard and
    the sums are added: exact counts, no duplicates.
    """
    network.eval()
    device = batches.images.device
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for images, labels in batches.in_order(batch_size, shard=world.shard):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = network(images)
        total_loss += F.cross_entropy(logits.float(), labels, reduction='sum').double()
        correct += (torch.max(logits, 1)[1] == labels).sum()
    world.sum(total_loss), world.sum(correct)
    return {'loss': total_loss.item() / len(batches), 'accuracy': correct.item() / len(batches) * 100.0}
