"""The optimizer: parameter groups for the paper's learning-rate reduction on BN scales, SGD and its schedule.

The paper shows the BN scale's gradient is large relative to the scale itself,
so with the usual learning rate gamma quickly leaves the small initial value
chosen for it. Dividing that parameter's learning rate by c (100 in the paper)
keeps it near its initialisation; the scales follow the same schedule, just
c times lower. Biases and scales get no weight decay; conv/linear weights do.
"""
import math

import torch
import torch.nn as nn

from .batch_norm import NORM_LAYER_TYPES
from .names import SCHEDULER_NAMES

__all__ = ['SCHEDULERS', 'adjust_weight_decay_and_learning_rate', 'build_optimizer']

# name -> (optimizer, num_epochs) -> per-epoch scheduler or None
SCHEDULERS = {
    'cos': lambda optimizer, num_epochs: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_epochs,
                                                                                     eta_min=1e-8),
    'none': lambda optimizer, num_epochs: None,
}
assert tuple(SCHEDULERS) == SCHEDULER_NAMES  # names.py names every schedule here


def _non_negative(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')


def adjust_weight_decay_and_learning_rate(network, weight_decay=1e-4, learning_rate=0.1, c=0, skip_list=()):
    """Split the trainable parameters of ``network`` into three optimizer groups, in this order.

    1. ``bias``: no weight decay. Every other parameter that is one-dimensional
       once squeezed (biases, gains) and the names in ``skip_list``.
    2. ``norm_scale``: the scale (weight) of every normalisation layer, found by
       module type, and the names in ``skip_list`` that contain 'weight': no weight
       decay, learning rate ``learning_rate / c`` when ``c > 1``.
    3. ``weight``: every other parameter (conv and linear weights): ``weight_decay``.

    As in the original code, only the ``norm_scale`` group carries an ``lr`` (and only
    when c > 1); the other groups take the optimizer's ``lr``. Parameters with
    ``requires_grad=False`` are left out; shared parameters appear once, in the order
    of ``network.named_parameters()``.
    """
    _non_negative('weight_decay', weight_decay)
    _non_negative('learning_rate', learning_rate)
    _non_negative('c', c)
    skip = set(skip_list)
    names = {name for name, _ in network.named_parameters()}
    unknown = sorted(skip - names)
    if unknown:
        raise ValueError(f'skip_list names parameters the network does not have: {", ".join(unknown)}')

    scale_ids = {id(module.weight) for module in network.modules()
                 if isinstance(module, NORM_LAYER_TYPES) and isinstance(getattr(module, 'weight', None), nn.Parameter)}
    biases, scales, weights = [], [], []
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in scale_ids or (name in skip and 'weight' in name):
            scales.append(param)
        elif param.squeeze().dim() == 1 or name in skip:
            biases.append(param)
        else:
            weights.append(param)

    scale_group = {'params': scales, 'weight_decay': 0.0, 'name': 'norm_scale'}
    if c > 1:
        scale_group['lr'] = learning_rate / c
    return [{'params': biases, 'weight_decay': 0.0, 'name': 'bias'}, scale_group,
            {'params': weights, 'weight_decay': weight_decay, 'name': 'weight'}]


def build_optimizer(network, learning_rate=0.1, momentum=0.9, weight_decay=1e-4, c=100, scheduler='cos',
                    num_epochs=180):
    """The original's optimizer: SGD over the three groups when weight decay or lr / c is in use (all
    trainable parameters in one group otherwise), and the scheduler (stepped once per epoch)."""
    if weight_decay > 0 or c > 1:
        parameters = adjust_weight_decay_and_learning_rate(network, weight_decay, learning_rate, c)
    else:
        parameters = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=learning_rate, momentum=momentum)
    return optimizer, SCHEDULERS[scheduler](optimizer, num_epochs)
