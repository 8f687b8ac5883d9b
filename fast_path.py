"""The training step, eager or captured whole in one CUDA graph, with optional mixed precision.

At batch 128 a CIFAR ResNet-18 step is a few hundred small kernels, so an eager
loop on a fast GPU is bound by kernel-launch overhead. Capturing forward,
backward and optimizer step once in a CUDA graph and replaying it removes that.

Two things keep the graph faithful to the eager protocol:
  * torch.optim.SGD reads the learning rate as a Python number (baked into a
    graph at capture), so the captured update is ``sgd_step`` below, which does
    SGD's exact arithmetic with each group's lr held in a device tensor that is
    refreshed from ``param_group['lr']`` whenever the scheduler changes it. The
    lr/c group, momentum and weight decay therefore behave as in eager mode, and
    the optimizer's state (momentum buffers) stays a plain torch SGD state.
  * a graph has fixed shapes, so the last, smaller batch of an epoch is trained
    with an eager step on the same model and optimizer.
fp16 needs dynamic loss scaling; torch.amp.GradScaler decides on the host whether
to skip a step, so ``LossScaler`` keeps GradScaler's rule on the device instead
and ``sgd_step`` skips an overflowing step with tensor arithmetic. Nothing here
calls ``.item()``: losses accumulate on the device.
"""
import contextlib

import torch

__all__ = ['PRECISIONS', 'autocast', 'sgd_step', 'LossScaler', 'TrainStep']

PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs require


def autocast(device, precision):
    """Mixed-precision context for ``precision`` ('fp32' means none). BN layers keep fp32 weights."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    # The autocast weight cache must be off inside CUDA graphs; it only saves work across
    # several forwards of one step, which this loop never does.
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype, cache_enabled=False)


def _check_plain_sgd(optimizer):
    if type(optimizer) is not torch.optim.SGD:
        raise ValueError(f'sgd_step needs torch.optim.SGD, got {type(optimizer).__name__}')
    for group in optimizer.param_groups:
        if group['nesterov'] or group['dampening'] != 0 or group.get('maximize', False):
            raise ValueError('sgd_step supports SGD with momentum and weight decay only '
                             '(no nesterov, dampening or maximize)')


@torch.no_grad()
def sgd_step(optimizer, negative_lrs, found_inf=None):
    """One torch.optim.SGD step (momentum, weight decay, dampening 0) with lrs read from tensors.

    ``negative_lrs[i]`` is a 0-d tensor holding ``-param_groups[i]['lr']`` on the
    parameters' device. Momentum buffers are the optimizer's own
    ``state[p]['momentum_buffer']`` and must exist (after one ordinary step, or
    zeros: SGD's first step equals a step from a zero buffer). When ``found_inf``
    (a 0-d tensor) is non-zero, the step leaves weights and momentum buffers exactly
    as they were, as GradScaler's skipped step does. Launches only device work, so
    it can be captured in a CUDA graph.
    """
    _check_plain_sgd(optimizer)
    skip = None if found_inf is None else found_inf > 0
    keep = None if skip is None else (~skip).float()
    for group, negative_lr in zip(optimizer.param_groups, negative_lrs):
        params = [p for p in group['params'] if p.grad is not None]
        if not params:
            continue
        grads = [p.grad for p in params]
        if skip is not None:  # inf * 0 is NaN, so an overflowed gradient is replaced, not scaled
            grads = [torch.where(skip, 0.0, grad) for grad in grads]
        if group['weight_decay'] != 0:
            grads = torch._foreach_add(grads, params, alpha=group['weight_decay'])
            if keep is not None:
                torch._foreach_mul_(grads, keep)
        if group['momentum'] != 0:
            buffers = [optimizer.state[p]['momentum_buffer'] for p in params]
            momentum = group['momentum'] if skip is None else torch.where(skip, 1.0, group['momentum'])
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads)
            grads = buffers
        torch._foreach_add_(params, torch._foreach_mul(grads, negative_lr if keep is None else negative_lr * keep))


class LossScaler:
    """fp16 dynamic loss scaling with torch.amp.GradScaler's rule, held on the device.

    The loss is multiplied by ``scale`` before backward; ``unscale_`` divides the
    gradients by it and sets ``found_inf`` if any is inf or NaN (the step is then
    skipped); ``update`` halves the scale after an overflow and doubles it after
    ``growth_interval`` clean steps. No host synchronisation, so the whole fp16
    step fits in a CUDA graph. ``state_dict`` uses GradScaler's format.
    """

    def __init__(self, device, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale = torch.full((), init_scale, device=device)
        self.growth_tracker = torch.zeros((), dtype=torch.int32, device=device)
        self.found_inf = torch.zeros((), device=device)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval

    def unscale_(self, optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group['params'] if p.grad is not None]
        self.found_inf.zero_()
        torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf,
                                                         self.scale.double().reciprocal().float())

    def update(self):
        torch._amp_update_scale_(self.scale, self.growth_tracker, self.found_inf, self.growth_factor,
                                 self.backoff_factor, self.growth_interval)

    def state_dict(self):
        return {'scale': self.scale.item(), 'growth_factor': self.growth_factor,
                'backoff_factor': self.backoff_factor, 'growth_interval': self.growth_interval,
                '_growth_tracker': int(self.growth_tracker.item())}

    def load_state_dict(self, state):
        self.scale.fill_(state['scale'])
        self.growth_tracker.fill_(state['_growth_tracker'])
        self.growth_factor, self.backoff_factor = state['growth_factor'], state['backoff_factor']
        self.growth_interval = state['growth_interval']


class TrainStep:
    """Trains ``network`` on one batch per call; whole-step CUDA graph where possible.

    ``use_graph`` needs a CUDA device and plain SGD. With fp16 every step, eager or
    captured, uses ``LossScaler`` and ``sgd_step``. On the device, ``loss_sum``
    adds up each step's (mean) loss in float64, as the original adds ``loss.item()``,
    and ``step_losses[i]`` holds the loss of step i of the epoch (``max_steps`` of them), so a non-finite loss
    can be traced to its step after the epoch, without a host-device
    synchronisation per step. (A step that fp16 skips for overflowing gradients
    still has a finite loss: skipping is loss scaling at work, not divergence.)
    """

    def __init__(self, network, optimizer, criterion, device, precision='fp32', channels_last=False,
                 use_graph=False, max_steps=1):
        self.network, self.optimizer, self.criterion = network, optimizer, criterion
        self.device, self.precision, self.channels_last = torch.device(device), precision, channels_last
        if use_graph or precision == 'fp16':  # both step through sgd_step
            _check_plain_sgd(optimizer)
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
        self.eager_steps = 0
        self.graph = None

    def begin_epoch(self, start_step=0, loss_sum=None, step_losses=None):
        """Reset the epoch's device accumulators in place (a captured graph holds their addresses);
        a run resumed mid-epoch passes the values saved at ``start_step``."""
        if loss_sum is None:
            self.loss_sum.zero_()
            self.step_losses.zero_()
        else:
            self.loss_sum.copy_(loss_sum)
            self.step_losses.copy_(step_losses)
        self.step_index.fill_(start_step)

    def first_nonfinite_step(self, num_steps):
        """Index (from 0) of the epoch's first step whose loss was NaN or inf, or None. Synchronises."""
        bad = (~torch.isfinite(self.step_losses[:num_steps])).nonzero()
        return int(bad[0]) if len(bad) else None

    def scaler_state(self):
        return None if self.scaler is None else self.scaler.state_dict()

    def _refresh_lrs(self):
        lrs = [group['lr'] for group in self.optimizer.param_groups]
        if lrs != self.tensor_lrs:  # once per epoch with a per-epoch schedule
            for tensor, lr in zip(self.negative_lrs, lrs):
                tensor.fill_(-lr)
            self.tensor_lrs = lrs

    def _record(self, loss):
        self.loss_sum += loss
        slot = self.step_index.remainder(self.step_losses.shape[0])  # wraps if begin_epoch is never called
        self.step_losses.index_copy_(0, slot, loss.float().view(1))
        self.step_index += 1

    def _format(self, images):
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _forward_backward(self, images, labels, loss_weight=1.0):
        with autocast(self.device, self.precision):
            loss = self.criterion(self.network(images), labels)
        weighted = loss * loss_weight if loss_weight != 1.0 else loss
        (weighted * self.scaler.scale if self.scaler is not None else weighted).backward()
        return weighted.detach().double()

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
            self._record(loss)
        self.graph_batch_size = labels.shape[0]
        # Keep the captured gradients alive and visible (checkpoints, inspection).
        self.static_grads = [p.grad for group in self.optimizer.param_groups for p in group['params']]

    def _replay(self, images, labels):
        self._refresh_lrs()
        self.static_images.copy_(images)
        self.static_labels.copy_(labels)
        self.graph.replay()

    def __call__(self, images, labels, loss_weight=1.0):
        """One step. ``loss_weight`` multiplies the loss that is backpropagated: data-parallel training
        uses it to weight a process's share of an unevenly split last batch (eager steps only)."""
        if not self.use_graph:
            return self._eager(images, labels, loss_weight)
        if self.graph is None and self.eager_steps < GRAPH_WARMUP_STEPS:
            # Warm-up steps are real training steps, run on a side stream so that lazy
            # initialisation (cuBLAS/cuDNN handles, autograd streams) happens before capture.
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self._eager(images, labels)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return None
        if self.graph is None:
            self._capture(images, labels)  # records the step without running it
        if labels.shape[0] == self.graph_batch_size:
            return self._replay(images, labels)
        return self._eager(images, labels)  # the last, smaller batch of an epoch
