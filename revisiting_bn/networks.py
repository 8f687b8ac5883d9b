"""The networks of the paper's experiments, chosen by name, with their normalisation layers and initialisation.

``construct_network`` mirrors the original code, initial tensors included: the
torchvision ResNet with every BN scale starting at ``bn_weight``; a CIFAR-style
stem for small images (data.SMALL_IMAGE_MAX); Kaiming-normal convolutions,
Kaiming-uniform linear layers with the ReLU gain, zero biases; and, optionally,
the paper's input normalisation: a BN layer in front of the network instead of
fixed dataset statistics.

``tv:NAME`` is any torchvision classification network with batch norm, built with
torchvision's own initialisation (tuned per family), then every BN layer made a
Scale BN with gamma = bn_weight and beta = 0. ``timm:NAME`` is any timm classification
model with batch norm (timm is optional: pip install '.[timm]'), built by
timm.create_model, then every batch-norm layer given the same start, whatever its class
(timm's BatchNormAct2d keeps its activation: batch_norm.convert_to_scale_batch_norm).
"""
import math
import warnings
from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batch_norm import NORM_LAYER_TYPES, NORMS, ScaleBatchNorm2d, convert_to_scale_batch_norm
from .data import DATASETS, DatasetInfo
from .names import (CIFAR_RESNET_DEPTHS, INPUT_NORMS, NETWORK_NAMES, RESNETS, TIMM, TORCHVISION, ZOOS,  # noqa: F401
                    network_problem, torchvision_classifiers, zoo_norm_problem)
from .protocol import BN_EPS, BN_MOMENTUM, INPUT_BN, INPUT_BN_FACTOR, INPUT_BN_LAYER, resolve_bn_weight

__all__ = ['NETWORKS', 'TORCHVISION', 'TIMM', 'ZOOS', 'network_problem', 'zoo_norm_problem', 'INPUT_NORMS', 'INPUT_BN_FACTOR',
           'Wrapped', 'layer_name',
           'construct_network', 'CifarResNet', 'initialize_weights', 'zero_biases', 'train_only_norms']



def torchvision_resnet(name, num_classes, info, norm):
    """torchvision's ResNet; small images get a 3x3 stride-1 stem without max-pool taking the dataset's channels."""
    import torchvision  # here, so that runs of the other networks start without it (seconds on a small CPU)
    resnet = getattr(torchvision.models, name)(weights=None, num_classes=num_classes, norm_layer=norm.layer2d)
    if info.small_images:
        resnet.conv1 = nn.Conv2d(info.channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        resnet.maxpool = nn.Identity()
    elif info.channels != 3:
        resnet.conv1 = nn.Conv2d(info.channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return resnet


class _ShortcutA(nn.Module):
    """He et al.'s option A: subsample by 2 and pad the new channels with zeros (no parameters)."""

    def __init__(self, stride, extra_channels):
        super().__init__()
        self.stride, self.pad = stride, extra_channels // 2

    def forward(self, x):
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad, self.pad))


class _CifarBlock(nn.Module):
    """A basic block: two 3x3 convolutions with normalisation, ReLU between and after the sum."""

    def __init__(self, in_planes, planes, stride, norm_layer):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.shortcut = (_ShortcutA(stride, planes - in_planes) if stride != 1 or in_planes != planes
                         else nn.Identity())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNets of He et al. (2016), depth 6n + 2: a 3x3 stem with 16 channels, three stages of n basic
    blocks with 16, 32 and 64 channels (the second and third start with stride 2), identity shortcuts with
    zero-padded channels (option A), global average pooling and a linear classifier."""

    def __init__(self, depth, num_classes, in_channels, norm_layer):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f'a CIFAR ResNet has depth 6n + 2, got {depth}')
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(_CifarBlock(in_planes, planes, stride if i == 0 else 1, norm_layer))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def cifar_resnet(depth, num_classes, info, norm):
    return CifarResNet(depth, num_classes, info.channels, norm.layer2d)


def mlp(num_classes, info, norm):
    """A small MLP with batch norm (BatchNorm1d): Flatten, Linear(C*H*W, 64), norm, ReLU, Linear(64, 32), norm,
    ReLU, Linear(32, classes)."""
    if norm.layer1d is None:
        raise ValueError('the MLP needs a normalisation with a layer for (N, C) inputs (bn or none)')
    return nn.Sequential(nn.Flatten(), nn.Linear(info.channels * info.image_size ** 2, 64), norm.layer1d(64),
                         nn.ReLU(), nn.Linear(64, 32), norm.layer1d(32), nn.ReLU(), nn.Linear(32, num_classes))


# name -> builder(num_classes, dataset info, norm) -> network; adding a network is one entry here plus its code.
NETWORKS = {
    **{name: partial(torchvision_resnet, name) for name in RESNETS},
    **{f'resnet{depth}': partial(cifar_resnet, depth) for depth in CIFAR_RESNET_DEPTHS},
    'mlp': mlp,
}
assert tuple(NETWORKS) == NETWORK_NAMES  # names.py names every network built here




class Wrapped(nn.Sequential):
    """A network behind one input layer: the input BN of --input_norm bn, or the channel repeat that feeds grey
    images to a torchvision network made for colour. Its children are '0' (the input layer) and '1' (the network),
    so the state_dict keys are the original code's ('0.weight', '1.conv1.weight', ...); ``layer_name`` takes the
    wrapping off a layer's name."""

    def __init__(self, first, network):
        super().__init__(OrderedDict([(INPUT_BN, first), ('1', network)]))


def layer_name(network, name):
    """The name of ``network``'s submodule ``name`` as it is in every configuration of that network: its name inside
    the network, whatever wraps it, and INPUT_BN_LAYER ('input_bn') for the input BN. So a baseline's and a proposed
    run's layers line up by name."""
    while isinstance(network, Wrapped) and name:
        head, _, rest = name.partition('.')
        if head == INPUT_BN:  # the input layer: the input BN, or a channel repeat
            return (INPUT_BN_LAYER if isinstance(network[0], ScaleBatchNorm2d) else 'input') + (f'.{rest}' if rest else '')
        network, name = network[1], rest
    return name


class RepeatChannels(nn.Module):
    """Grey images into a network made for colour: the one channel repeated (no parameters)."""

    def __init__(self, channels):
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x


def torchvision_network(name, num_classes, info, bn_weight):
    """torchvision's ``name`` with its own initialisation, every BN layer a Scale BN (gamma = bn_weight, beta = 0);
    grey images have their channel repeated for its colour stem. Refused without a BN layer, or when it cannot
    take images of this size."""
    import torchvision
    # GoogLeNet and Inception v3: one output, as the training step expects, and their own initialisation.
    single_output = {'aux_logits': False, 'init_weights': True} if name in ('googlenet', 'inception_v3') else {}
    network = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **single_output)
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules()):
        raise ValueError(f'{TORCHVISION}{name} has no batch norm layer, so the paper\'s method has nothing to act on; '
                         f'choose a network with BN (e.g. {TORCHVISION}mobilenet_v2, {TORCHVISION}resnet50)')
    network = convert_to_scale_batch_norm(network, bn_weight)
    if info.channels != 3:
        network = Wrapped(RepeatChannels(3), network)
    _check_image_size(network, f'{TORCHVISION}{name}', info)
    return network.train()


def timm_network(name, num_classes, info, bn_weight):
    """timm's ``name`` as timm.create_model builds it for ``info``'s channels and classes, every batch-norm layer given
    the method's start; the network's ``notes`` say what the start overrode (timm's zero initialisation of the last
    BN of each residual block). Refused without a batch-norm layer, or when it cannot take images of this size."""
    import timm
    network = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=info.channels)
    batch_norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not batch_norms:
        raise ValueError(f'{TIMM}{name} has no batch norm layer, so the paper\'s method has nothing to act on; '
                         f'choose a model with BN (e.g. {TIMM}efficientnet_b0, {TIMM}resnet18)')
    zeroed = sum(1 for m in batch_norms if m.affine and not m.weight.detach().any())
    with warnings.catch_warnings():  # a model's other norms (a head's LayerNorm) keep theirs: nothing to say here
        warnings.simplefilter('ignore')
        network = convert_to_scale_batch_norm(network, bn_weight)
    _check_image_size(network, f'{TIMM}{name}', info)
    network.notes = [f'NOTE: {TIMM}{name}: timm starts the scale of {zeroed} of its {len(batch_norms)} BN layers (the '
                     f'last of each residual block) at 0; the method starts every BN scale at {bn_weight:g}, so they '
                     f'do too'] if zeroed else []
    return network.train()


def _check_image_size(network, label, info):
    try:
        with torch.no_grad():
            network.eval()(torch.zeros(2, info.channels, info.image_size, info.image_size))
    except RuntimeError as error:
        raise ValueError(f'{label} cannot take {info.image_size}x{info.image_size} images ('
                         f'{str(error).splitlines()[0][:120]}): use a larger --image_size') from None


def initialize_weights(network):
    """Kaiming-normal convolutions and Kaiming-uniform linear weights, both fan_in with the ReLU gain.

    The original code calls ``kaiming_uniform_(w, mode='fan_in', nonlinearity='relu',
    a=sqrt(5))`` and comments that this is nn.Linear's default. It is not: with
    ``nonlinearity='relu'`` PyTorch ignores ``a`` and uses the gain sqrt(2), so the
    weights are U(-sqrt(6/fan_in), sqrt(6/fan_in)), 2.45x wider than the default. The
    paper's runs used these weights, so we keep them (and draw nothing for the biases,
    which zero_biases sets to 0, so the random stream matches too).
    """
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode='fan_in', nonlinearity='relu')
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, mode='fan_in', nonlinearity='relu', a=math.sqrt(5))
    return network


def zero_biases(network):
    """Set every bias parameter in the network (conv, linear and norm layers) to 0."""
    for module in network.modules():
        bias = getattr(module, 'bias', None)
        if isinstance(bias, nn.Parameter):
            nn.init.zeros_(bias)
    return network


def train_only_norms(network):
    """Freeze every parameter except the normalisation layers' scales and shifts (Frankle et al., 2021: training
    only BatchNorm): convolutions, linear layers and the output layer keep their initial values. Returns the
    network."""
    for module in network.modules():
        if not isinstance(module, NORM_LAYER_TYPES):
            for parameter in module.parameters(recurse=False):
                parameter.requires_grad_(False)
    return network


def _check_choice(kind, value, choices):
    if value not in choices:
        raise ValueError(f'unknown {kind} {value!r}; choose one of: {", ".join(choices)}')


def construct_network(network_name='resnet18', num_classes=10, dataset='cifar10', bn_weight=1.0,
                      input_norm='bn', norm='bn', norm_options=None):
    """Build a network of the registry (or ``tv:NAME``, see torchvision_network) prepared as in the paper, for
    ``dataset``: a name in data.DATASETS, or a data.DatasetInfo (channels, image size, classes).

    Every normalisation layer is ``norm`` (a name in batch_norm.NORMS, with ``norm_options``
    such as affine, track_running_stats, or MABN's B and real_B) with its scale starting at
    ``bn_weight``; a kind that goes with its own convolution (MABN: CenConv2d) gets it in every
    convolution; then the original's initialisation and zero biases. With ``input_norm='bn'``
    the result is ``nn.Sequential(input_bn, network)`` where ``input_bn`` is a ScaleBatchNorm2d
    over the input channels (named protocol.INPUT_BN), its scale starting at bn_weight x 0.58 and its shift
    frozen at 0.
    """
    problem = network_problem(network_name)
    if problem:
        raise ValueError(problem)
    if not isinstance(dataset, DatasetInfo):
        _check_choice('dataset', dataset, DATASETS)
    _check_choice('input_norm', input_norm, INPUT_NORMS)
    _check_choice('norm', norm, NORMS)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f'num_classes must be a positive integer, got {num_classes!r}')
    bn_weight, raw_bn_weight = resolve_bn_weight(bn_weight), float(bn_weight)
    info = dataset if isinstance(dataset, DatasetInfo) else DATASETS[dataset]
    kind, options = NORMS[norm], dict(norm_options or {})

    problem = zoo_norm_problem(network_name, norm, options.get('affine', True), options.get('track_running_stats', True))
    if problem:
        raise ValueError(problem)
    if network_name.startswith(TORCHVISION):
        network = torchvision_network(network_name[len(TORCHVISION):], num_classes, info, bn_weight)
    elif network_name.startswith(TIMM):
        network = timm_network(network_name[len(TIMM):], num_classes, info, bn_weight)
    else:
        network = NETWORKS[network_name](num_classes, info, kind.configured(bn_weight=bn_weight, **options))
        if kind.conv is not None:
            for module in network.modules():
                if type(module) is nn.Conv2d:
                    module.__class__ = kind.conv  # a subclass that only changes forward: no new parameters drawn
        initialize_weights(network)
        zero_biases(network)
    if input_norm == 'dataset':
        return network
    notes = getattr(network, 'notes', [])

    # As in the original: the factor applies to the flag's value, and a product <= 0 means 1.0,
    # so --bn_weight 0 or -1 starts the input BN at 1.0 (not 0.58).
    bn_options = {key: options[key] for key in ('affine', 'track_running_stats') if key in options}
    input_bn = ScaleBatchNorm2d(info.channels, eps=BN_EPS, momentum=BN_MOMENTUM,
                                bn_weight=raw_bn_weight * INPUT_BN_FACTOR, **bn_options)
    if input_bn.affine:
        input_bn.bias.requires_grad_(False)  # the input BN only rescales; its shift stays 0
    wrapped = Wrapped(input_bn, network)
    wrapped.notes = notes  # what building the network had to say (a timm model's zero-initialised scales)
    return wrapped
