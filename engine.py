"""The training engine: one training step (eager, or replayed from one CUDA graph), an epoch of steps, evaluation.

Nothing here waits for the GPU inside an epoch: losses accumulate on the device, a
non-finite one is traced to its step after the epoch, and the progress bar only
counts steps. An epoch's position (its random draws, the steps done and its loss
sums) is part of ``TrainStep``'s state, so a run stopped mid-epoch resumes from
the next step, exactly.
"""
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

from distributed import Distributed
from fast_path import LossScaler, autocast, check_plain_sgd, sgd_step

__all__ = ['GRAPH_WARMUP_STEPS', 'TrainStep', 'train_one_epoch', 'evaluate', 'progress']

GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs require
# The graph's first step may differ from the eager step of the same batch and state only by how the update is
# rounded (sgd_step against torch.optim.SGD: one rounding of the update and one of the sum). Autocast keeps the
# weights, BN statistics and the update in float32 for every --precision, so the unit is float32's rounding,
# 2^-23 relative to |value| + |change|; two roundings make at most 2 units, and 8 leaves a factor 4 to spare.
GRAPH_CHECK_UNIT, GRAPH_CHECK_TOLERANCE = 2.0 ** -23, 8.0
LOG_INTERVAL_S = 30     # progress lines in a log file (stdout not a terminal) come at most this often


class TrainStep:
    """Trains ``network`` on one batch per call; whole-step CUDA graph where possible.

    ``use_graph`` needs a CUDA device and plain SGD. torch.optim.SGD reads the learning
    rate as a Python number, which a graph would bake in, so the captured update is
    ``fast_path.sgd_step`` with each group's lr in a device tensor; a graph has fixed
    shapes, so the last, smaller batch of an epoch is trained eagerly. With fp16 every
    step, eager or captured, uses ``fast_path.LossScaler`` and ``sgd_step``.

    On the device, ``loss_sum`` adds up each step's (mean) loss in float64, as the
    original adds ``loss.item()``, and ``step_losses[i]`` holds the loss of step i of the
    epoch (``max_steps`` of them). (A step that fp16 skips for overflowing gradients
    still has a finite loss: skipping is loss scaling at work, not divergence.)
    """

    def __init__(self, network, optimizer, criterion, device, precision='fp32', channels_last=False,
                 use_graph=False, max_steps=1, eager_because='asked for'):
        self.network, self.optimizer, self.criterion = network, optimizer, criterion
        self.device, self.precision, self.channels_last = torch.device(device), precision, channels_last
        if use_graph or precision == 'fp16':  # both step through sgd_step
            check_plain_sgd(optimizer)
        if use_graph and self.device.type != 'cuda':
            raise ValueError('CUDA graphs need a CUDA device')
        self.use_graph = use_graph
        self.scaler = None
        if precision == 'fp16':
            self.scaler = LossScaler(self.device)
            for group in optimizer.param_groups:
                if group['momentum'] != 0:
                    for p in group['params']:
                        optimizer.state[p].setdefault('momentum_buffer', torch.zeros_like(p))
        self.negative_lrs = [torch.zeros((), device=self.device) for _ in optimizer.param_groups]
        self.tensor_lrs = None  # the lrs that negative_lrs hold
        self.loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self.step_losses = torch.zeros(max_steps, device=self.device)
        self.step_index = torch.zeros(1, dtype=torch.long, device=self.device)
        self.steps_done, self.in_epoch, self.epoch_start_rng = 0, False, None
        self.eager_steps = 0
        self.graph = None
        # Which step path runs, why, and the first replay's measured deviation (recorded in the results).
        self.path = {'step': 'CUDA graph', 'why': 'not captured yet', 'check_deviation': None} if use_graph else {
            'step': 'eager', 'why': eager_because, 'check_deviation': None}

    # ------------------------------------------------------------------ the epoch's position

    def begin_epoch(self):
        """Start an epoch, or go on with one restored mid-epoch; returns the index of its next step.

        The epoch's order and flips are drawn from torch's global generator: a new epoch
        remembers the generator's state, a restored one sets it back, so the epoch is
        drawn again exactly. Accumulators are reset in place (a captured graph holds them).
        """
        if self.in_epoch:
            torch.set_rng_state(self.epoch_start_rng)
            return self.steps_done
        self.epoch_start_rng = torch.get_rng_state()
        self.loss_sum.zero_()
        self.step_losses.zero_()
        self.step_index.zero_()
        self.steps_done, self.in_epoch = 0, True
        return 0

    def end_epoch(self):
        self.in_epoch = False

    def state_dict(self):
        return {'in_epoch': self.in_epoch, 'steps_done': self.steps_done, 'epoch_start_rng': self.epoch_start_rng,
                'loss_sum': self.loss_sum, 'step_losses': self.step_losses,
                'loss_scaler': None if self.scaler is None else self.scaler.state_dict()}

    def load_state_dict(self, state):
        self.in_epoch, self.steps_done, self.epoch_start_rng = (state['in_epoch'], state['steps_done'],
                                                                state['epoch_start_rng'])
        self.loss_sum.copy_(state['loss_sum'])
        self.step_losses.copy_(state['step_losses'])
        self.step_index.fill_(self.steps_done)
        if self.scaler is not None and state['loss_scaler']:
            self.scaler.load_state_dict(state['loss_scaler'])

    def first_nonfinite_step(self):
        """Index (from 0) of the epoch's first step whose loss was NaN or inf, or None. Synchronises."""
        bad = (~torch.isfinite(self.step_losses[:self.steps_done])).nonzero()
        return int(bad[0]) if len(bad) else None

    def mean_loss(self, world=Distributed()):
        """The original's training loss: the mean over the epoch's batches of each batch's mean loss."""
        return world.sum(self.loss_sum.clone()).item() / world.world_size / self.steps_done

    # ------------------------------------------------------------------ one step

    def _refresh_lrs(self):
        lrs = [group['lr'] for group in self.optimizer.param_groups]
        if lrs != self.tensor_lrs:  # once per epoch with a per-epoch schedule
            for tensor, lr in zip(self.negative_lrs, lrs):
                tensor.fill_(-lr)
            self.tensor_lrs = lrs

    def _record(self, loss, captured=False):
        """Add the step's loss (float32) to the float64 sum (exact promotion, as Python's float sum) and keep it
        at the step's slot: a slot known on the host for eager steps, held on the device in a captured graph."""
        self.loss_sum += loss
        if captured:
            slot = self.step_index.remainder(self.step_losses.shape[0])  # wraps if begin_epoch is never called
            self.step_losses.index_copy_(0, slot, loss.view(1))
            self.step_index += 1
        else:
            self.step_losses[self.steps_done % self.step_losses.shape[0]] = loss

    def _format(self, images):
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _forward_backward(self, images, labels, loss_weight=1.0):
        with autocast(self.device, self.precision):
            loss = self.criterion(self.network(images), labels)
        weighted = loss * loss_weight if loss_weight != 1.0 else loss
        (weighted * self.scaler.scale if self.scaler is not None else weighted).backward()
        return weighted.detach().float()

    def _update(self):
        """The optimizer step from the gradients in place, as device work only (capturable)."""
        if self.scaler is None:
            sgd_step(self.optimizer, self.negative_lrs)
        else:
            self.scaler.unscale_(self.optimizer)
            sgd_step(self.optimizer, self.negative_lrs, self.scaler.found_inf)
            self.scaler.update()

    def _eager(self, images, labels, loss_weight=1.0):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._forward_backward(self._format(images), labels, loss_weight)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self._refresh_lrs()
            self._update()
        self._record(loss)
        self.eager_steps += 1

    def _capture(self, images, labels):
        self.static_images = torch.empty_like(self._format(images))
        self.static_labels = torch.empty_like(labels)
        self._refresh_lrs()
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            loss = self._forward_backward(self.static_images, self.static_labels)
            self._update()
            self._record(loss, captured=True)
        self.graph_batch_size = labels.shape[0]
        self.step_index.fill_(self.steps_done)  # the graph's slot counter starts at this step
        # Keep the captured gradients alive and visible (checkpoints, inspection).
        self.static_grads = [p.grad for group in self.optimizer.param_groups for p in group['params']]

    def _replay(self, images, labels):
        self._refresh_lrs()
        self.static_images.copy_(images)
        self.static_labels.copy_(labels)
        self.graph.replay()

    def _warm_up(self, images, labels):
        """A real training step on a side stream, so that lazy initialisation (cuBLAS/cuDNN handles, autograd
        streams) happens before capture."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._eager(images, labels)
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _live_state(self):
        """Every tensor a step changes, as the live tensors: weights and BN statistics, momentum buffers, the
        loss scaler's state and the epoch's loss records."""
        tensors = list(self.network.state_dict().values())
        tensors += [self.optimizer.state[p]['momentum_buffer'] for group in self.optimizer.param_groups
                    for p in group['params'] if 'momentum_buffer' in self.optimizer.state[p]]
        tensors += [] if self.scaler is None else [self.scaler.scale, self.scaler.growth_tracker]
        return tensors + [self.loss_sum, self.step_losses]

    def _capture_checked(self, images, labels):
        """Capture the step, and check its first replay against an eager step of the same batch from the same
        state: on a deviation above GRAPH_CHECK_TOLERANCE, or any error while capturing or replaying, warn in
        one line, keep the eager step's result and train eagerly from here. The GPU path proves itself on the
        user's GPU; the verdict and the deviation go into ``path`` (and the results)."""
        live = self._live_state()
        before = [t.clone() for t in live]
        self._eager(images, labels)  # the reference
        expected = [t.clone() for t in live]
        deviation, problem = None, None
        try:
            for tensor, value in zip(live, before):
                tensor.copy_(value)
            self._capture(images, labels)
            self._replay(images, labels)
            deviation = _deviation(live, expected, before)
            if not deviation <= GRAPH_CHECK_TOLERANCE:
                problem = (f'its first step differs from the eager step by {deviation:.3g} rounding units, '
                           f'more than {GRAPH_CHECK_TOLERANCE:g}')
        except Exception as error:  # capture or replay failed: the eager result stands
            problem = f'it failed: {type(error).__name__}: {" ".join(str(error).split())[:200]}'
        if problem is None:
            self.path = {'step': 'CUDA graph', 'why': 'its first step matched an eager step',
                         'check_deviation': deviation}
            return
        for tensor, value in zip(live, expected):
            tensor.copy_(value)
        self.graph, self.use_graph = None, False
        self.path = {'step': 'eager', 'why': f'the CUDA graph was dropped: {problem}', 'check_deviation': deviation}
        print(f'warning: the CUDA graph was dropped ({problem}); training eagerly from here', file=sys.stderr,
              flush=True)

    def _step(self, images, labels, loss_weight):
        if not self.use_graph:
            return self._eager(images, labels, loss_weight)
        if self.graph is None and self.eager_steps < GRAPH_WARMUP_STEPS:
            return self._warm_up(images, labels)
        if self.graph is None:
            return self._capture_checked(images, labels)  # trains this batch, by the graph or eagerly
        if labels.shape[0] == self.graph_batch_size:
            return self._replay(images, labels)
        return self._eager(images, labels)  # the last, smaller batch of an epoch

    def __call__(self, images, labels, loss_weight=1.0):
        """One step. ``loss_weight`` multiplies the loss that is backpropagated: data-parallel training
        uses it to weight a process's share of an unevenly split last batch (eager steps only)."""
        self._step(images, labels, loss_weight)
        self.steps_done += 1


def _deviation(live, expected, before):
    """The largest difference between ``live`` and ``expected`` tensors, in float32 rounding units of each
    element's size and change (|expected| + |expected - before|); integer tensors must be equal (else inf)."""
    worst = 0.0
    for got, want, old in zip(live, expected, before):
        if not want.is_floating_point():
            worst = max(worst, 0.0 if torch.equal(got, want) else float('inf'))
            continue
        got, want, old = got.double(), want.double(), old.double()
        scale = GRAPH_CHECK_UNIT * (want.abs() + (want - old).abs())
        error = (got - want).abs()
        exact = (error == 0) | (torch.isnan(got) & torch.isnan(want))
        ratio = torch.where(exact, torch.zeros_like(error), error / scale)  # error / 0 is inf, NaN stays NaN
        worst = max(worst, float('inf') if torch.isnan(ratio).any() else ratio.max().item() if ratio.numel() else 0.0)
    return worst


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


def train_one_epoch(train_step, batches, batch_size, stop=None, label='', world=Distributed()):
    """One pass over the shuffled, flipped training set, or the rest of one restored mid-epoch.

    Returns the number of the epoch's steps done: all of them, or fewer when ``stop``
    received a signal. Under torchrun each process trains on its shard of every batch;
    a share of an unevenly split last batch is weighted so that the averaged gradient
    is the whole batch's mean.
    """
    train_step.network.train()
    total = batches.num_batches(batch_size, min_batch=world.world_size)
    start = train_step.begin_epoch()
    with progress(total, start, label) as bar:
        for images, labels, whole in batches.shuffled(batch_size, start_batch=start, shard=world.shard,
                                                      min_batch=world.world_size):
            train_step(images, labels, loss_weight=labels.shape[0] * world.world_size / whole)
            bar.update()
            if stop is not None and stop.received is not None and train_step.steps_done < total:
                return train_step.steps_done
    train_step.end_epoch()
    return train_step.steps_done


@torch.no_grad()
def evaluate(network, batches, batch_size, precision='fp32', channels_last=False, world=Distributed()):
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
