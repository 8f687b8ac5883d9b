"""Optimizer parameter groups for the paper's learning-rate reduction on BN scales.

The paper shows the BN scale's gradient is large relative to the scale itself,
so with the usual learning rate gamma quickly leaves the small initial value
chosen for it. Dividing that parameter's learning rate by c (100 in the paper)
keeps it near its initialisation; the scales follow the same schedule, just
c times lower. Biases and scales get no weight decay; conv/linear weights do.
"""
import math

import torch.nn as nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ['NORM_LAYER_TYPES', 'adjust_weight_decay_and_learning_rate']

# Every normalisation layer with a learnable scale: all BatchNorm and InstanceNorm
# variants (ours included, through _NormBase), SyncBatchNorm, GroupNorm, LayerNorm, RMSNorm.
NORM_LAYER_TYPES = tuple(t for t in (_NormBase, nn.GroupNorm, nn.LayerNorm, getattr(nn, 'RMSNorm', None))
                         if t is not None)


def _non_negative(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')


def adjust_weight_decay_and_learning_rate(network, weight_decay=1e-4, learning_rate=0.1, c=0, skip_list=()):
    """Split the trainable parameters of ``network`` into three optimizer groups.

    1. ``bias``: every bias, plus the names in ``skip_list``: no weight decay.
    2. ``norm_scale``: the scale (weight) of every normalisation layer: no weight
       decay, learning rate ``learning_rate / c`` when ``c > 1``.
    3. ``weight``: every other parameter (conv and linear weights): ``weight_decay``.

    Scales are found by the module that owns them, so any model works. Parameters
    with ``requires_grad=False`` are left out; shared parameters appear once.
    Each group carries its own ``lr``, so the result can go to any torch optimizer.
    """
    _non_negative('weight_decay', weight_decay)
    _non_negative('learning_rate', learning_rate)
    _non_negative('c', c)
    skip = set(skip_list)
    names = {name for name, _ in network.named_parameters()}
    unknown = sorted(skip - names)
    if unknown:
        raise ValueError(f'skip_list names parameters the network does not have: {", ".join(unknown)}')

    biases, scales, weights, seen = [], [], [], set()
    for module_name, module in network.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            full_name = f'{module_name}.{param_name}' if module_name else param_name
            if isinstance(module, NORM_LAYER_TYPES) and param_name == 'weight':
                scales.append(param)
            elif param_name == 'bias' or full_name in skip:
                biases.append(param)
            else:
                weights.append(param)

    scale_lr = learning_rate / c if c > 1 else learning_rate
    return [
        {'params': biases, 'weight_decay': 0.0, 'lr': learning_rate, 'name': 'bias'},
        {'params': scales, 'weight_decay': 0.0, 'lr': scale_lr, 'name': 'norm_scale'},
        {'params': weights, 'weight_decay': weight_decay, 'lr': learning_rate, 'name': 'weight'},
    ]
