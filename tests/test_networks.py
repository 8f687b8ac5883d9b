import math

import pytest
import torch
import torch.nn as nn

from batch_norm import ScaleBatchNorm2d
from networks import INPUT_BN_FACTOR, NETWORKS, construct_network


def batch_norms(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_networks_list_and_unknown_names():
    assert NETWORKS == ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')
    with pytest.raises(ValueError, match='resnet18, resnet34'):
        construct_network('resnet19')
    with pytest.raises(ValueError, match='unknown dataset'):
        construct_network(dataset='cifar11')
    with pytest.raises(ValueError, match='unknown input_norm'):
        construct_network(input_norm='none')
    with pytest.raises(ValueError, match='num_classes'):
        construct_network(num_classes=0)


def test_cifar_network_matches_the_paper():
    torch.manual_seed(0)
    model = construct_network('resnet18', num_classes=10, dataset='cifar10', bn_weight=0.1, input_norm='bn')
    assert isinstance(model, nn.Sequential) and len(model) == 2
    input_bn, resnet = model
    assert isinstance(input_bn, ScaleBatchNorm2d) and input_bn.num_features == 3
    assert torch.allclose(input_bn.weight, torch.full((3,), 0.1 * INPUT_BN_FACTOR))
    assert torch.all(input_bn.bias == 0) and not input_bn.bias.requires_grad
    conv1 = resnet.conv1
    assert (conv1.in_channels, conv1.kernel_size, conv1.stride, conv1.padding) == (3, (3, 3), (1, 1), (1, 1))
    assert conv1.bias is None and isinstance(resnet.maxpool, nn.Identity)
    layers = batch_norms(resnet)
    assert len(layers) == 20 and all(type(m) is ScaleBatchNorm2d for m in layers)
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in layers)
    assert all(torch.all(m.weight == torch.tensor(0.1)) for m in layers)
    for module in model.modules():
        if getattr(module, 'bias', None) is not None:
            assert torch.all(module.bias == 0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_weight_initialisation():
    torch.manual_seed(0)
    resnet = construct_network('resnet18', num_classes=100, dataset='cifar100', input_norm='dataset')
    conv = resnet.layer4[1].conv2.weight  # 512 x 512 x 3 x 3: Kaiming normal, fan_in, ReLU gain
    fan_in = conv.shape[1] * 9
    assert conv.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.01)
    assert abs(conv.mean().item()) < 1e-3
    fc = resnet.fc.weight  # Kaiming uniform, a=sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1 / math.sqrt(512)
    assert fc.abs().max().item() <= bound and fc.abs().max().item() > 0.99 * bound
    assert fc.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert torch.all(resnet.fc.bias == 0) and resnet.fc.out_features == 100


def test_fashionmnist_dataset_input_norm_and_default_scale():
    model = construct_network('resnet18', 10, 'fashionmnist', bn_weight=0, input_norm='dataset')
    assert not isinstance(model, nn.Sequential) and model.conv1.in_channels == 1
    assert all(torch.all(m.weight == 1) for m in batch_norms(model))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with_bn = construct_network('resnet18', 10, 'fashionmnist', bn_weight=-1, input_norm='bn')
    assert torch.allclose(with_bn[0].weight, torch.tensor([INPUT_BN_FACTOR]))


def test_bottleneck_network_and_imagenet_stem():
    model = construct_network('resnet50', 10, 'cifar10', bn_weight=0.2, input_norm='bn')
    assert len(batch_norms(model)) == 54  # 53 in the ResNet-50, plus the input BN
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    imagenet = construct_network('resnet18', 1000, 'imagenet', input_norm='dataset')
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)
