"""The networks of the paper's experiments, chosen by name, with their normalisation layers and initialisation.

``construct_network`` mirrors the original code, initial tensors included: the
torchvision ResNet with every BN scale starting at ``bn_weight``; a CIFAR-style
stem for small images; Kaiming-normal convolutions, Kaiming-uniform linear
layers with the ReLU gain, zero biases; and, optionally, the paper's input
normalisation: a BN layer in front of the network instead of fixed dataset
statistics.
"""
import math
from functools import partial

import torch.nn as nn
import torchvision

from batch_norm import BN_EPS, BN_MOMENTUM, NORMS, ScaleBatchNorm2d, resolve_bn_weight
from data import DATASETS

__all__ = ['NETWORKS', 'INPUT_NORMS', 'INPUT_BN_FACTOR', 'construct_network',
           'initialize_weights', 'zero_biases']

INPUT_NORMS = ('bn', 'dataset')
# Standard deviation of ReLU(z) for z ~ N(0, 1), i.e. sqrt(1/2 - 1/(2*pi)) ~ 0.58: the
# input BN's scale starts at bn_weight x 0.58 so the images enter the first conv at
# the spread the later, post-ReLU BN layers produce.
INPUT_BN_FACTOR = 0.58


def torchvision_resnet(name, num_classes, info, norm):
    """torchvision's ResNet; small images get a 3x3 stride-1 stem without max-pool taking the dataset's channels."""
    resnet = getattr(torchvision.models, name)(weights=None, num_classes=num_classes, norm_layer=norm.layer2d)
    if info.small_images:
        resnet.conv1 = nn.Conv2d(info.channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        resnet.maxpool = nn.Identity()
    elif info.channels != 3:
        resnet.conv1 = nn.Conv2d(info.channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return resnet


# name -> builder(num_classes, dataset info, norm) -> network; adding a network is one entry here plus its code.
NETWORKS = {name: partial(torchvision_resnet, name)
            for name in ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')}


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


def _check_choice(kind, value, choices):
    if value not in choices:
        raise ValueError(f'unknown {kind} {value!r}; choose one of: {", ".join(choices)}')


def construct_network(network_name='resnet18', num_classes=10, dataset='cifar10', bn_weight=1.0,
                      input_norm='bn', norm='bn'):
    """Build a network of the registry prepared as in the paper.

    Every normalisation layer is ``norm`` (a name in batch_norm.NORMS) with its scale
    starting at ``bn_weight``; then the original's initialisation and zero biases. With
    ``input_norm='bn'`` the result is ``nn.Sequential(input_bn, network)`` where
    ``input_bn`` is a ScaleBatchNorm2d over the input channels, its scale starting at
    bn_weight x 0.58 and its shift frozen at 0.
    """
    _check_choice('network', network_name, NETWORKS)
    _check_choice('dataset', dataset, DATASETS)
    _check_choice('input_norm', input_norm, INPUT_NORMS)
    _check_choice('norm', norm, NORMS)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f'num_classes must be a positive integer, got {num_classes!r}')
    bn_weight, raw_bn_weight = resolve_bn_weight(bn_weight), float(bn_weight)
    info = DATASETS[dataset]

    network = NETWORKS[network_name](num_classes, info, NORMS[norm].configured(bn_weight=bn_weight))
    initialize_weights(network)
    zero_biases(network)
    if input_norm == 'dataset':
        return network

    # As in the original: the factor applies to the flag's value, and a product <= 0 means 1.0,
    # so --bn_weight 0 or -1 starts the input BN at 1.0 (not 0.58).
    input_bn = ScaleBatchNorm2d(info.channels, eps=BN_EPS, momentum=BN_MOMENTUM, affine=True,
                                bn_weight=raw_bn_weight * INPUT_BN_FACTOR)
    input_bn.bias.requires_grad_(False)  # the input BN only rescales; its shift stays 0
    return nn.Sequential(input_bn, network)
