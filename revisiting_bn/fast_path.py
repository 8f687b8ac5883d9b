"""The layer around engine.Step for GPUs: fp16 loss scaling on the device, and one CUDA graph per step, checked.

At batch 128 a CIFAR ResNet-18 step is a few hundred small kernels, so an eager
loop on a fast GPU is bound by kernel-launch overhead; ``GraphStep`` captures
forward, backward and optimizer step once in a CUDA graph and replays it. Two
things keep that graph faithful to the eager protocol:
  * torch.optim.SGD reads the learning rate as a Python number (baked into a
    graph at capture), so the captured update is ``sgd_step`` below, which does
    SGD's arithmetic with each group's lr held in a device tensor that is
    refreshed from ``param_group['lr']`` whenever the scheduler changes it. The
    lr/c group, momentum and weight decay therefore behave as in eager mode, and
    the optimizer's state (momentum buffers) stays a plain torch SGD state.
  * fp16 needs dynamic loss scaling; torch.amp.GradScaler decides on the host
    whether to skip a step, so ``LossScaler`` keeps GradScaler's rule on the
    device instead and ``sgd_step`` skips an overflowing step with tensor arithmetic.
The graph checks its first replay against an eager step of the same batch and state,
and is dropped (the run goes on eagerly) if the two differ by more than rounding.
"""
import sys

import torch

from .engine import Step

__all__ = ['GRAPH_WARMUP_STEPS', 'GRAPH_CHECK_TOLERANCE', 'build_step', 'check_plain_sgd', 'sgd_step',
           'DeviceLearningRates', 'LossScaler', 'ScaledStep', 'GraphStep']

GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs require
# The graph's first step may differ from the eager step of the same batch and state only by how the update is
# rounded (sgd_step against torch.optim.SGD: one rounding of the update and one of the sum). Autocast keeps the
# weights, BN statistics and the update in float32 for every --precision, so the unit is float32's rounding,
# 2^-23 relative to |value| + |change|; two roundings make at most 2 units, and 8 leaves a factor 4 to spare.
GRAPH_CHECK_UNIT, GRAPH_CHECK_TOLERANCE = 2.0 ** -23, 8.0


def build_step(network, optimizer, criterion, device, precision='fp32', channels_last=False, use_graph=False,
               eager_because='asked for'):
    """The training step for these settings: engine.Step, its fp16 form, either one inside a CUDA graph."""
    if use_graph and torch.device(device).type != 'cuda':
        raise ValueError('CUDA graphs need a CUDA device')
    step = (ScaledStep(network, optimizer, criterion, device, channels_last) if precision == 'fp16'
            else Step(network, optimizer, criterion, precision, channels_last))
    if use_graph:
        return GraphStep(step, device)
    step.execution['why'] = eager_because
    return step


def check_plain_sgd(optimizer):
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
    check_plain_sgd(optimizer)
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


class DeviceLearningRates:
    """Each parameter group's learning rate, negated, in a device tensor that ``sgd_step`` reads: refreshed
    from the optimizer (where the scheduler writes) outside the graph, read inside it."""

    def __init__(self, optimizer, device):
        self.optimizer = optimizer
        self.negative = [torch.zeros((), device=device) for _ in optimizer.param_groups]
        self.held = None  # the lrs that ``negative`` holds

    def refresh(self):
        lrs = [group['lr'] for group in self.optimizer.param_groups]
        if lrs != self.held:  # once per epoch with a per-epoch schedule
            for tensor, lr in zip(self.negative, lrs):
                tensor.fill_(-lr)
            self.held = lrs


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


class ScaledStep(Step):
    """engine.Step in fp16: the loss scaled by ``LossScaler`` for backward, the update by ``sgd_step``, which
    skips an overflowing step without reading anything back (so the step can also be captured)."""

    def __init__(self, network, optimizer, criterion, device, channels_last=False):
        super().__init__(network, optimizer, criterion, 'fp16', channels_last)
        check_plain_sgd(optimizer)
        self.scaler = LossScaler(device)
        self.lrs = DeviceLearningRates(optimizer, device)
        for group in optimizer.param_groups:
            if group['momentum'] != 0:
                for p in group['params']:
                    optimizer.state[p].setdefault('momentum_buffer', torch.zeros_like(p))

    def __call__(self, images, labels, loss_weight=1.0):
        self.lrs.refresh()
        return super().__call__(images, labels, loss_weight)

    def backward(self, loss):
        (loss * self.scaler.scale).backward()

    def update(self):
        self.scaler.unscale_(self.optimizer)
        sgd_step(self.optimizer, self.lrs.negative, self.scaler.found_inf)
        self.scaler.update()


class GraphStep:
    """An eager step (engine.Step or ScaledStep) captured once in a CUDA graph and replayed for every full batch.

    The first steps run eagerly on a side stream (warm-up, as capture requires); then one
    step is captured, and its first replay is checked against an eager step of the same
    batch from the same state: on a deviation above GRAPH_CHECK_TOLERANCE, or any error
    while capturing or replaying, one warning line, the eager result kept, and eager steps
    from there on. A graph has fixed shapes, so the last, smaller batch of an epoch is
    trained eagerly. ``execution`` records the verdict and the measured deviation.
    """

    def __init__(self, eager, device):
        check_plain_sgd(eager.optimizer)
        self.eager, self.network, self.scaler = eager, eager.network, eager.scaler
        self.lrs = eager.lrs if isinstance(eager, ScaledStep) else DeviceLearningRates(eager.optimizer, device)
        self.device, self.use_graph, self.graph, self.eager_steps = torch.device(device), True, None, 0
        self.execution = {'step': 'CUDA graph', 'why': 'not captured yet', 'check_deviation': None}

    def __call__(self, images, labels, loss_weight=1.0):
        """One step; ``loss_weight`` (data-parallel training) is for eager steps only."""
        if not self.use_graph:
            return self._eager(images, labels, loss_weight)
        if self.graph is None and self.eager_steps < GRAPH_WARMUP_STEPS:
            return self._warm_up(images, labels)
        if self.graph is None:
            return self._capture_checked(images, labels)  # trains this batch, by the graph or eagerly
        if labels.shape[0] == self.graph_batch_size:
            return self._replay(images, labels)
        return self._eager(images, labels)  # the last, smaller batch of an epoch

    def _eager(self, images, labels, loss_weight=1.0):
        self.eager_steps += 1
        return self.eager(images, labels, loss_weight)

    def _warm_up(self, images, labels):
        """A real training step on a side stream, so that lazy initialisation (cuBLAS/cuDNN handles, autograd
        streams) happens before capture."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            loss = self._eager(images, labels)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return loss

    def _update_on_device(self):
        if isinstance(self.eager, ScaledStep):
            self.eager.update()
        else:
            sgd_step(self.eager.optimizer, self.lrs.negative)

    def _capture(self, images, labels):
        layout = torch.channels_last if self.eager.channels_last else torch.contiguous_format
        self.static_images = torch.empty_like(images, memory_format=layout)
        self.static_labels = torch.empty_like(labels)
        self.lrs.refresh()
        self.eager.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = self.eager.forward_backward(self.static_images, self.static_labels)
            self._update_on_device()
        self.graph_batch_size = labels.shape[0]
        # Keep the captured gradients alive and visible (checkpoints, inspection).
        self.static_grads = [p.grad for group in self.eager.optimizer.param_groups for p in group['params']]

    def _replay(self, images, labels):
        self.lrs.refresh()
        self.static_images.copy_(images)
        self.static_labels.copy_(labels)
        self.graph.replay()
        return self.static_loss

    def _live_state(self):
        """Every tensor a step changes, as the live tensors: weights and BN statistics, momentum buffers and the
        loss scaler's state."""
        optimizer = self.eager.optimizer
        tensors = list(self.network.state_dict().values())
        tensors += [optimizer.state[p]['momentum_buffer'] for group in optimizer.param_groups
                    for p in group['params'] if 'momentum_buffer' in optimizer.state[p]]
        return tensors + ([] if self.scaler is None else [self.scaler.scale, self.scaler.growth_tracker])

    def _capture_checked(self, images, labels):
        """Capture the step and check its first replay (state and loss) against an eager step of the same batch
        from the same state; keep whichever result the check allows."""
        live = self._live_state()
        before = [t.clone() for t in live]
        eager_loss = self._eager(images, labels)  # the reference
        expected = [t.clone() for t in live]
        deviation, problem, loss = None, None, None
        try:
            for tensor, value in zip(live, before):
                tensor.copy_(value)
            self._capture(images, labels)
            loss = self._replay(images, labels)
            deviation = _deviation(live + [loss], expected + [eager_loss], before + [eager_loss])
            if not deviation <= GRAPH_CHECK_TOLERANCE:
                problem = (f'its first step differs from the eager step by {deviation:.3g} rounding units, '
                           f'more than {GRAPH_CHECK_TOLERANCE:g}')
        except Exception as error:  # capture or replay failed: the eager result stands
            problem = f'it failed: {type(error).__name__}: {" ".join(str(error).split())[:200]}'
        if problem is None:
            self.execution = {'step': 'CUDA graph', 'why': 'its first step matched an eager step',
                              'check_deviation': deviation}
            return loss
        for tensor, value in zip(live, expected):
            tensor.copy_(value)
        self.graph, self.use_graph = None, False
        self.execution = {'step': 'eager', 'why': f'the CUDA graph was dropped: {problem}',
                          'check_deviation': deviation}
        print(f'warning: the CUDA graph was dropped ({problem}); training eagerly from here', file=sys.stderr,
              flush=True)
        return eager_loss


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
