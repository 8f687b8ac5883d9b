"""The arithmetic a CUDA graph can hold: SGD with learning rates in device tensors, fp16 loss scaling on the device.

At batch 128 a CIFAR ResNet-18 step is a few hundred small kernels, so an eager
loop on a fast GPU is bound by kernel-launch overhead; engine.TrainStep captures
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
Nothing here calls ``.item()`` on the training path.
"""
import contextlib

import torch

__all__ = ['PRECISIONS', 'autocast', 'check_plain_sgd', 'sgd_step', 'LossScaler']

PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def autocast(device, precision):
    """Mixed-precision context for ``precision`` ('fp32' means none). BN layers keep fp32 weights."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    # The autocast weight cache must be off inside CUDA graphs; it only saves work across
    # several forwards of one step, which this loop never does.
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype, cache_enabled=False)


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
