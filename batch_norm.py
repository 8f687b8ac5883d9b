"""Batch normalisation whose scale (gamma) starts at a chosen constant, and the registry of normalisation kinds.

Davis & Frank (ECCV 2022) observe that the learned BN scale stays close to its
initial value, so the usual gamma = 1 lets BN's normalised (unit-variance)
outputs pass through the network at full size. Starting gamma below 1 (0.1 is
the suggested value) shrinks them from the first step.

The classes here subclass PyTorch's private ``_BatchNorm`` base rather than
``nn.BatchNorm2d`` on purpose: torchvision's model constructors (ResNet,
DenseNet, MobileNet, ...) re-initialise every module that ``isinstance`` of
``nn.BatchNorm2d`` to gamma = 1 after building it, which would silently undo
``norm_layer=partial(ScaleBatchNorm2d, bn_weight=0.1)``. Everything else is
inherited unchanged, so outputs, gradients, running statistics and state_dict
keys are exactly those of ``nn.BatchNorm1d/2d/3d``.
"""
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['ScaleBatchNorm1d', 'ScaleBatchNorm2d', 'ScaleBatchNorm3d', 'resolve_bn_weight',
           'convert_to_scale_batch_norm', 'Norm', 'NORMS', 'BN_EPS', 'BN_MOMENTUM']

BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # torchvision's defaults; the paper keeps them


def resolve_bn_weight(bn_weight):
    """The initial scale actually used: ``bn_weight``, or 1.0 when it is <= 0."""
    if isinstance(bn_weight, bool):  # ScaleBatchNorm2d(64, 1e-5, 0.1, True, False): torch's positional order
        raise ValueError(f'bn_weight must be a number, got {bn_weight!r} (the 5th positional argument is '
                         f'bn_weight, as in the original code; pass track_running_stats by keyword)')
    try:
        value = float(bn_weight)
    except (TypeError, ValueError):
        raise ValueError(f'bn_weight must be a number, got {bn_weight!r}') from None
    if not math.isfinite(value):
        raise ValueError(f'bn_weight must be finite, got {bn_weight!r}')
    return value if value > 0 else 1.0


class _ScaleBatchNorm(_BatchNorm):
    """Shared body of the ScaleBatchNorm classes; subclasses name the input ranks they accept."""
    input_dims = ()
    input_layout = ''

    # bn_weight is the 5th positional argument, as in the original code's ScaleBatchNorm2d.
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, bn_weight=1.0, *,
                 track_running_stats=True, device=None, dtype=None):
        # Set before the base constructor, which calls reset_parameters().
        self.bn_weight = resolve_bn_weight(bn_weight)
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            nn.init.constant_(self.weight, self.bn_weight)
            nn.init.zeros_(self.bias)

    def _check_input_dim(self, input):
        if input.dim() not in self.input_dims:
            ranks = ' or '.join(f'{d}-D' for d in self.input_dims)
            raise ValueError(f'{type(self).__name__} expects a {ranks} input {self.input_layout}, '
                             f'got a {input.dim()}-D input of shape {tuple(input.shape)}')

    def extra_repr(self):
        return f'{super().extra_repr()}, bn_weight={self.bn_weight}'


class ScaleBatchNorm1d(_ScaleBatchNorm):
    """``nn.BatchNorm1d`` (inputs (N, C) or (N, C, L)) with gamma initialised to ``bn_weight``."""
    input_dims = (2, 3)
    input_layout = '(N, C) or (N, C, L)'


class ScaleBatchNorm2d(_ScaleBatchNorm):
    """``nn.BatchNorm2d`` (inputs (N, C, H, W)) with gamma initialised to ``bn_weight``."""
    input_dims = (4,)
    input_layout = '(N, C, H, W)'


class ScaleBatchNorm3d(_ScaleBatchNorm):
    """``nn.BatchNorm3d`` (inputs (N, C, D, H, W)) with gamma initialised to ``bn_weight``."""
    input_dims = (5,)
    input_layout = '(N, C, D, H, W)'


_SCALED_VERSION = {
    nn.BatchNorm1d: ScaleBatchNorm1d, ScaleBatchNorm1d: ScaleBatchNorm1d,
    nn.BatchNorm2d: ScaleBatchNorm2d, ScaleBatchNorm2d: ScaleBatchNorm2d,
    nn.BatchNorm3d: ScaleBatchNorm3d, ScaleBatchNorm3d: ScaleBatchNorm3d,
}


def _scaled_copy(bn, bn_weight):
    scaled_class = _SCALED_VERSION[type(bn)]
    reference = bn.weight if bn.affine else bn.running_mean
    factory = {} if reference is None else {'device': reference.device, 'dtype': reference.dtype}
    scaled = scaled_class(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                          track_running_stats=bn.track_running_stats, bn_weight=bn_weight, **factory)
    if bn.track_running_stats:
        scaled.running_mean.copy_(bn.running_mean)
        scaled.running_var.copy_(bn.running_var)
        scaled.num_batches_tracked.copy_(bn.num_batches_tracked)
    if bn.affine:
        scaled.weight.requires_grad_(bn.weight.requires_grad)
        scaled.bias.requires_grad_(bn.bias.requires_grad)
    scaled.train(bn.training)
    return scaled


def convert_to_scale_batch_norm(module, bn_weight=0.1):
    """Replace every BatchNorm1d/2d/3d in ``module`` (at any depth) by its Scale version.

    Each new layer keeps eps, momentum, affine, track_running_stats, the running
    statistics, requires_grad flags, device, dtype and train/eval mode; its
    scale is re-initialised to ``bn_weight`` (<= 0 means 1.0) and its shift to 0,
    as the method prescribes for a layer about to be trained. Layers that are
    already Scale versions are re-initialised the same way. Returns the
    converted model, which is a new object when ``module`` itself is a BN layer.
    """
    resolve_bn_weight(bn_weight)
    if type(module) in _SCALED_VERSION:
        return _scaled_copy(module, bn_weight)
    for name, child in module.named_children():
        converted = convert_to_scale_batch_norm(child, bn_weight)
        if converted is not child:
            setattr(module, name, converted)
    return module


@dataclass(frozen=True)
class Norm:
    """One kind of normalisation a network can be built with.

    ``layer2d(num_features)`` makes a layer for (N, C, H, W) inputs, ``layer1d`` one for
    (N, C) inputs (None where the kind has none), and ``scale_types`` are the module types
    whose ``weight`` is a normalisation scale (the parameter groups give it lr / c).
    """
    layer2d: Callable
    layer1d: Optional[Callable]
    scale_types: tuple

    def configured(self, **options):
        """The same kind with ``options`` (bn_weight, ...) bound into both layer makers."""
        bind = lambda make: None if make is None else partial(make, **options)  # noqa: E731
        return Norm(bind(self.layer2d), bind(self.layer1d), self.scale_types)


# name -> kind; a network takes its layers from here, so adding a kind is one entry plus its layer code.
NORMS = {
    'bn': Norm(partial(ScaleBatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM, affine=True),
               partial(ScaleBatchNorm1d, eps=BN_EPS, momentum=BN_MOMENTUM, affine=True), (_ScaleBatchNorm,)),
}
