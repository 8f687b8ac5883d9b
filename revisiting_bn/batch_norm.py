"""Normalisation layers whose scale (gamma) starts at a chosen constant (BN, MABN), and the registry of their kinds.

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
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from .names import NORM_NAMES
from .protocol import BN_EPS, BN_MOMENTUM, resolve_bn_weight

__all__ = ['ScaleBatchNorm1d', 'ScaleBatchNorm2d', 'ScaleBatchNorm3d', 'resolve_bn_weight',
           'convert_to_scale_batch_norm', 'to_plain_batch_norm', 'MABN2d', 'CenConv2d', 'Norm', 'NORMS',
           'NORM_LAYER_TYPES', 'BN_EPS', 'BN_MOMENTUM', 'layer_seeing_one_value', 'is_other_norm', 'plain_view']

@torch.jit.unused
def _traced_by_fx(input):
    return isinstance(input, torch.fx.Proxy)


class _ScaleBatchNorm(_BatchNorm):
    """Shared body of the ScaleBatchNorm classes; subclasses name the input ranks they accept.

    The rank check compiles under TorchScript (its facts are module constants) and is left out while
    torch.fx traces (a traced input has no rank yet), so scripting, tracing, torch.compile and
    torch.export see the same module as eager code.
    """
    input_dims = ()
    input_layout = ''
    __constants__ = [*_BatchNorm.__constants__, 'min_dim', 'max_dim', 'rank_problem']

    # bn_weight is the 5th positional argument, as in the original code's ScaleBatchNorm2d.
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, bn_weight=1.0, *,
                 track_running_stats=True, device=None, dtype=None):
        # Set before the base constructor, which calls reset_parameters().
        self.bn_weight = resolve_bn_weight(bn_weight)
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.min_dim, self.max_dim = min(self.input_dims), max(self.input_dims)  # consecutive ranks
        ranks = ' or '.join(f'{d}-D' for d in self.input_dims)
        self.rank_problem = f'{type(self).__name__} expects a {ranks} input {self.input_layout}'

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            nn.init.constant_(self.weight, self.bn_weight)
            nn.init.zeros_(self.bias)

    def _check_input_dim(self, input):
        if not torch.jit.is_scripting():
            if _traced_by_fx(input):
                return
        if input.dim() < self.min_dim or input.dim() > self.max_dim:
            raise ValueError(f'{self.rank_problem}, got a {input.dim()}-D input')

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


def _replacement(bn, layer_class, **extra):
    """A ``layer_class`` layer with ``bn``'s settings and mode that holds ``bn``'s own Parameter and buffer objects,
    as torch.nn.SyncBatchNorm.convert_sync_batchnorm does: an optimizer made before the conversion still trains
    them, and nothing is copied."""
    reference = bn.weight if bn.affine else bn.running_mean
    factory = {} if reference is None else {'device': reference.device, 'dtype': reference.dtype}
    layer = layer_class(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                        track_running_stats=bn.track_running_stats, **factory, **extra)
    if bn.affine:
        layer.weight, layer.bias = bn.weight, bn.bias
    if bn.track_running_stats:
        layer.running_mean, layer.running_var = bn.running_mean, bn.running_var
        layer.num_batches_tracked = bn.num_batches_tracked
    return layer.train(bn.training)


def _scaled(bn, bn_weight):
    """A plain BatchNorm1d/2d/3d (or a Scale layer) as its Scale version, holding its own Parameters and buffers."""
    return _reset(_replacement(bn, _SCALED_VERSION[type(bn)], bn_weight=bn_weight), bn_weight)


def _reset(bn, bn_weight):
    """The method's start for a layer about to be trained: its scale at ``bn_weight`` (<= 0: 1.0), its shift at 0, in
    its own Parameters."""
    if bn.affine:
        with torch.no_grad():
            bn.weight.fill_(resolve_bn_weight(bn_weight))
            bn.bias.zero_()
    return bn


def _refuse_unconvertible(module):
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and isinstance(module, _NormBase):
        raise ValueError(f'{type(module).__name__} has no size yet: run one forward pass before converting, or '
                         f'build the model with a ScaleBatchNorm layer of known num_features')


def is_other_norm(module):
    """Whether ``module`` normalises but is no batch norm that the method's start applies to: GroupNorm, LayerNorm,
    InstanceNorm, RMSNorm (and their subclasses, timm's too), a frozen BN (torchvision's and timm's FrozenBatchNorm2d:
    statistics and affine as buffers, nothing to train)."""
    if isinstance(module, (_BatchNorm, MABN2d)):
        return False
    return isinstance(module, NORM_LAYER_TYPES) or ('Norm' in type(module).__name__ and hasattr(module, 'running_var'))


def _convert(module, bn_weight, name, left):
    """``module`` with the method's start in every batch-norm layer below it (see convert_to_scale_batch_norm); the
    names of the normalisation layers it cannot convert are added to ``left``. Returns (module, layers converted)."""
    _refuse_unconvertible(module)
    if type(module) in _SCALED_VERSION:
        return _scaled(module, bn_weight), 1
    if isinstance(module, _BatchNorm):  # a subclass (timm's BatchNormAct2d, SyncBatchNorm): it keeps what it does
        return _reset(module, bn_weight), 1
    if is_other_norm(module):
        left.append(f'{name or "the model"} ({type(module).__name__})')
    converted = 0
    for child_name, child in module.named_children():
        new, count = _convert(child, bn_weight, f'{name}.{child_name}' if name else child_name, left)
        converted += count
        if new is not child:
            setattr(module, child_name, new)
    return module, converted


def convert_to_scale_batch_norm(module, bn_weight=0.1):
    """Give every batch-norm layer in ``module`` (at any depth: every ``_BatchNorm``) the method's start, in place.

    A plain ``nn.BatchNorm1d/2d/3d`` becomes its Scale version, as
    torch.nn.SyncBatchNorm.convert_sync_batchnorm replaces layers: a layer that holds the same
    Parameter and buffer objects (so an optimizer made before the conversion goes on training them)
    with the same eps, momentum, affine, track_running_stats, running statistics, requires_grad
    flags, device, dtype and train/eval mode. Any other ``_BatchNorm`` subclass keeps its class and
    all it does beyond BN (timm's BatchNormAct2d its activation and dropout, SyncBatchNorm its
    synchronisation). Either way the scale is set to ``bn_weight`` (<= 0 means 1.0) and the shift to 0,
    in the layer's own Parameters, as the method prescribes for a layer about to be trained; Scale
    layers are set the same way. A normalisation layer that is not batch norm (is_other_norm:
    GroupNorm, LayerNorm, a frozen BN, ...) keeps its own start and is named in a warning; a module
    with no batch-norm layer at all is refused (ValueError). Returns ``module``, or the new layer when
    ``module`` itself is a plain BN layer.
    """
    resolve_bn_weight(bn_weight)
    left = []
    module, converted = _convert(module, bn_weight, '', left)
    if not converted:
        raise ValueError(f'convert_to_scale_batch_norm: {type(module).__name__} has no batch-norm layer, so the '
                         f'method has nothing to act on' + (f' (its normalisation layers are not batch norm: '
                                                            f'{", ".join(left[:4])})' if left else ''))
    if left:
        warnings.warn(f'convert_to_scale_batch_norm: {len(left)} normalisation layer{"s" if len(left) > 1 else ""} '
                      f'not batch norm keep{"" if len(left) > 1 else "s"} its own start: {", ".join(left[:6])}'
                      f'{" and more" if len(left) > 6 else ""}', stacklevel=2)
    return module


def plain_view(layer):
    """The batch norm inside a normalisation layer: the layer itself where its forward is batch norm's alone (torch's
    BatchNorm1d/2d/3d and SyncBatchNorm, the Scale layers, MABN, ...), else a plain BatchNorm1d/2d/3d holding its own
    Parameters and buffers: timm's BatchNormAct2d without the activation and dropout it applies after BN."""
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    if not isinstance(layer, _BatchNorm) or type(layer) in (*plain, *_SCALED_VERSION, nn.SyncBatchNorm):
        return layer
    return next((_replacement(layer, kind) for kind in plain if isinstance(layer, kind)), layer)


_PLAIN_VERSION = {ScaleBatchNorm1d: nn.BatchNorm1d, ScaleBatchNorm2d: nn.BatchNorm2d,
                  ScaleBatchNorm3d: nn.BatchNorm3d}


def to_plain_batch_norm(module):
    """Make every ScaleBatchNorm layer of a (trained) model the plain ``nn.BatchNorm1d/2d/3d``, in place, for tools
    that insist on PyTorch's exact types (conv-BN fusion, quantization). Each new layer holds the same Parameter
    and buffer objects, values untouched, so the state_dict is the same and an optimizer made before goes on
    training them. Returns ``module``, or the new layer when ``module`` itself is a Scale layer."""
    if type(module) in _PLAIN_VERSION:
        return _replacement(module, _PLAIN_VERSION[type(module)])
    for name, child in module.named_children():
        converted = to_plain_batch_norm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


# ----------------------------------------------------------------------------- MABN (Yan et al., ICLR 2020)

class _MABNFunction(torch.autograd.Function):
    """MABN's training forward and backward, as the official MABN.py computes them, with the iteration
    counter kept on the device: its branches are tensor selections, so nothing waits for the GPU and the
    layer can be captured in a CUDA graph."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_var, eps, momentum, buffer_x2, buffer_gz, iters, buffer_size,
                warmup_iters):
        C = x.shape[1]
        x2 = (x * x).mean(dim=3).mean(dim=2).mean(dim=0)
        slot = iters.remainder(buffer_size)
        buffer_x2.index_copy_(0, slot, x2.view(1, C))
        # Before the buffer has filled (and during warm-up) the batch's own second moment, then the average
        # over the last buffer_size iterations.
        from_batch = (iters <= buffer_size) | (iters < warmup_iters)
        var = torch.where(from_batch, x2, buffer_x2.mean(dim=0)).view(1, C, 1, 1)
        z = x / (var + eps).sqrt()
        r = (var + eps).sqrt() / (running_var + eps).sqrt()
        # The renormalisation r is held at 1 for the first max(1000, warmup_iters) iterations.
        r = torch.where(iters <= max(1000, warmup_iters), torch.clamp(r, 1, 1), torch.clamp(r, 1 / 5, 5))
        y = r * z
        ctx.save_for_backward(z, var, weight, buffer_gz, r, from_batch, slot)
        ctx.eps = eps
        running_var.copy_(momentum * running_var + (1 - momentum) * var)
        return weight.view(1, C, 1, 1) * y + bias.view(1, C, 1, 1)

    @staticmethod
    def backward(ctx, grad_output):
        z, var, weight, buffer_gz, r, from_batch, slot = ctx.saved_tensors
        C = grad_output.shape[1]
        y = r * z
        g = grad_output * weight.view(1, C, 1, 1)
        g = g * r
        gz = (g * z).mean(dim=3).mean(dim=2).mean(dim=0)
        buffer_gz.index_copy_(0, slot, gz.view(1, C))
        mean_gz = torch.where(from_batch, gz, buffer_gz.mean(dim=0)).view(1, C, 1, 1)
        gx = 1. / torch.sqrt(var + ctx.eps) * (g - z * mean_gz)
        return (gx, (grad_output * y).sum(dim=3).sum(dim=2).sum(dim=0), grad_output.sum(dim=3).sum(dim=2).sum(dim=0),
                None, None, None, None, None, None, None, None)


class MABN2d(nn.Module):
    """Moving Average Batch Normalisation (Yan et al., "Towards Stabilizing Batch Statistics in Backward
    Propagation of Batch Normalization", ICLR 2020) for (N, C, H, W) inputs, with scale starting at bn_weight.

    For small batches: BN's statistics, and the two it uses in the backward pass, are noisy when
    the batch is small. MABN normalises by the second moment only (no mean subtraction), averages it
    and mean(g * z) over the last real_B / B iterations, and renormalises towards the running
    variance. Arguments as in megvii-model/MABN (``B``: the batch per process; ``real_B``: the
    batch to simulate, a multiple of B; ``momentum``: the running variance's retention), plus
    ``bn_weight``. Parameters and buffers have the official names and shapes, so its weights load.
    """

    def __init__(self, num_features, B, real_B, eps=1e-5, momentum=0.98, warmup_iters=100, bn_weight=1.0):
        super().__init__()
        if B < 1 or real_B % B:
            raise ValueError(f'MABN2d needs real_B divisible by B, got real_B={real_B}, B={B}')
        self.num_features, self.buffer_size = num_features, real_B // B
        self.eps, self.momentum, self.warmup_iters = eps, momentum, warmup_iters
        self.bn_weight = resolve_bn_weight(bn_weight)
        self.weight = nn.Parameter(torch.full((num_features,), self.bn_weight))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(1, num_features, 1, 1))
        self.register_buffer('iters', torch.zeros(1, dtype=torch.long))
        self.register_buffer('buffer_x2', torch.zeros(self.buffer_size, num_features))
        self.register_buffer('buffer_gz', torch.zeros(self.buffer_size, num_features))

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f'MABN2d expects a 4-D input (N, C, H, W), got a {x.dim()}-D input of shape '
                             f'{tuple(x.shape)}')
        x = x.float()  # its statistics in float32, as autocast runs batch norm
        if self.training:
            self.iters.add_(1)
            return _MABNFunction.apply(x, self.weight, self.bias, self.running_var, self.eps, self.momentum,
                                       self.buffer_x2, self.buffer_gz, self.iters, self.buffer_size,
                                       self.warmup_iters)
        C = x.shape[1]
        x = x / (self.running_var.view(1, C, 1, 1) + self.eps).sqrt()
        return self.weight.view(1, C, 1, 1) * x + self.bias.view(1, C, 1, 1)

    def extra_repr(self):
        return (f'{self.num_features}, buffer_size={self.buffer_size}, eps={self.eps}, momentum={self.momentum}, '
                f'warmup_iters={self.warmup_iters}, bn_weight={self.bn_weight}')


class CenConv2d(nn.Conv2d):
    """A Conv2d whose kernel has its per-output-filter mean subtracted in the forward (weight centralisation,
    used with MABN). Arguments as the official CenConv2d; it is an nn.Conv2d otherwise (parameters, init)."""

    def __init__(self, in_planes, out_planes, kernel_size=3, stride=1, padding=0, dilation=1, groups=1, bias=False):
        super().__init__(in_planes, out_planes, kernel_size, stride, padding, dilation, groups, bias)

    def forward(self, x):
        weight = self.weight
        weight = weight - weight.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _identity(num_features):
    return nn.Identity()


@dataclass(frozen=True)
class Norm:
    """One kind of normalisation a network can be built with.

    ``layer2d(num_features, **options)`` makes a layer for (N, C, H, W) inputs, ``layer1d`` one
    for (N, C) inputs (None where the kind has none); ``options`` names the keyword arguments
    the kind takes (of bn_weight, affine, track_running_stats, B, real_B). ``scale_types``
    are the module types whose ``weight`` is a normalisation scale (the parameter groups give
    it lr / c), and ``conv``, when set, is the convolution class the kind goes with.
    """
    layer2d: Callable
    layer1d: Optional[Callable]
    options: tuple
    scale_types: tuple
    conv: Optional[type] = None

    def configured(self, **options):
        """The same kind with its own ``options`` bound into both layer makers (others are ignored)."""
        mine = {key: value for key, value in options.items() if key in self.options}
        bind = lambda make: None if make is None else partial(make, **mine)  # noqa: E731
        return Norm(bind(self.layer2d), bind(self.layer1d), self.options, self.scale_types, self.conv)


# name -> kind; a network takes its layers from here, so adding a kind is one entry plus its layer code.
NORMS = {
    'bn': Norm(partial(ScaleBatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM),
               partial(ScaleBatchNorm1d, eps=BN_EPS, momentum=BN_MOMENTUM),
               ('bn_weight', 'affine', 'track_running_stats'), (_ScaleBatchNorm,)),
    'mabn': Norm(MABN2d, None, ('bn_weight', 'B', 'real_B'), (MABN2d,), conv=CenConv2d),
    'none': Norm(_identity, _identity, (), ()),
}
assert tuple(NORMS) == NORM_NAMES  # names.py names every kind registered here
# Every normalisation layer with a learnable scale: all of torch's BatchNorm and InstanceNorm variants
# (through _NormBase), SyncBatchNorm, GroupNorm, LayerNorm, RMSNorm, and every kind registered above.
NORM_LAYER_TYPES = tuple(dict.fromkeys(
    [t for t in (_NormBase, nn.GroupNorm, nn.LayerNorm, getattr(nn, 'RMSNorm', None)) if t is not None]
    + [t for norm in NORMS.values() for t in norm.scale_types]))


class _OneValue(Exception):
    pass


@torch.no_grad()
def layer_seeing_one_value(network, sample):
    """The name of the first batch-statistics layer (BN, MABN) that a batch of the single image ``sample`` gives
    one value per channel (an (1, C) input: batch norm cannot train on it), or None. One forward pass in eval
    mode: no statistics, parameter or random stream changes."""
    def check(name):
        def hook(module, inputs):
            if inputs[0].numel() == inputs[0].shape[1]:
                raise _OneValue(name)
        return hook

    layers = [(name, m) for name, m in network.named_modules() if isinstance(m, (_BatchNorm, MABN2d))]
    handles = [m.register_forward_pre_hook(check(name)) for name, m in layers]
    was_training = network.training
    try:
        network.eval()
        network(sample)
        return None
    except _OneValue as found:
        return str(found)
    finally:
        network.train(was_training)
        for handle in handles:
            handle.remove()
