"""construct_network: the registry, the paper's networks, and initial tensors equal to the original code's."""
import math

import pytest
import torch
import torch.nn as nn

from revisiting_bn.batch_norm import ScaleBatchNorm2d
from conftest import batch_norms, original_network
from revisiting_bn.networks import INPUT_BN_FACTOR, NETWORKS, construct_network
from revisiting_bn.seeds import make_complex


def test_networks_list_and_unknown_names():
    assert tuple(NETWORKS) == ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnet20', 'resnet32',
                               'resnet44', 'resnet56', 'resnet110', 'mlp')
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
    assert torch.equal(input_bn.weight, torch.full((3,), 0.1 * INPUT_BN_FACTOR))
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


@pytest.mark.parametrize('network_name, fan_in', [('resnet18', 512), ('resnet50', 2048)])
def test_linear_layers_start_as_in_the_original_code(network_name, fan_in):
    """kaiming_uniform_(fan_in, relu, a=sqrt(5)): the ReLU gain, so U(-sqrt(6/fan_in), sqrt(6/fan_in)), std
    sqrt(2/fan_in) (0.0625 for ResNet-18's fc, 0.0312 for ResNet-50's), not nn.Linear's default std 1/sqrt(3 fan_in)."""
    torch.manual_seed(0)
    resnet = construct_network(network_name, num_classes=100, dataset='cifar100', input_norm='dataset')
    conv = resnet.conv1.weight  # Kaiming normal, fan_in, ReLU gain: 1728 values, so the std's standard error is 1.7%
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (3 * 9)), rel=0.05)
    fc = resnet.fc.weight
    bound = math.sqrt(6 / fan_in)
    assert bound * 0.99 < fc.abs().max().item() <= bound
    # 100 x fan_in values: the sample std is within 1% of sqrt(2/fan_in) (its standard error is ~0.3%)
    assert fc.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.01)
    assert torch.all(resnet.fc.bias == 0) and resnet.fc.out_features == 100


@pytest.mark.parametrize('bn_weight, expected', [(-1, 1.0), (0, 1.0), (0.1, 0.1 * 0.58), (1, 0.58), (2, 1.16)])
def test_input_bn_scale_is_bn_weight_times_058_then_mapped(bn_weight, expected):
    """The original multiplies first and maps a value <= 0 to 1.0 afterwards, in the BN constructor."""
    model = construct_network('resnet18', 10, 'cifar10', bn_weight=bn_weight, input_norm='bn')
    assert torch.equal(model[0].weight, torch.full((3,), expected, dtype=torch.float32))
    later = 1.0 if bn_weight <= 0 else bn_weight
    assert all(torch.equal(m.weight, torch.full_like(m.weight, later)) for m in batch_norms(model[1]))


# bn_weight and input_norm only fill constants and wrap the network, so their grid runs on ResNet-18; every
# other network is compared once, with the input BN (which holds the whole ResNet).
INITIAL_CASES = [('resnet18', bn_weight, input_norm) for bn_weight in (-1, 0, 0.1, 1)
                 for input_norm in ('bn', 'dataset')]
ORIGINAL_NETWORKS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')  # the original code's five
INITIAL_CASES += [(network, 0.1, 'bn') for network in ORIGINAL_NETWORKS[1:]]


@pytest.mark.parametrize('network_name, bn_weight, input_norm', INITIAL_CASES)
def test_every_initial_tensor_equals_the_original_code(network_name, bn_weight, input_norm):
    """Same torch seed, then ours and the original's arithmetic (conftest.original_network): every parameter and
    buffer bit for bit, and the same frozen parameters."""
    torch.manual_seed(make_complex(7))
    ours = construct_network(network_name, 10, 'cifar10', bn_weight=bn_weight, input_norm=input_norm)
    torch.manual_seed(make_complex(7))
    original = original_network(network_name, 10, bn_weight, input_norm)
    mine, theirs = ours.state_dict(), original.state_dict()
    assert list(mine) == list(theirs)
    for key in mine:
        assert mine[key].dtype == theirs[key].dtype and torch.equal(mine[key], theirs[key]), key
    assert [(n, p.requires_grad) for n, p in ours.named_parameters()] == [
        (n, p.requires_grad) for n, p in original.named_parameters()]


def test_fashionmnist_dataset_input_norm_and_default_scale():
    model = construct_network('resnet18', 10, 'fashionmnist', bn_weight=0, input_norm='dataset')
    assert not isinstance(model, nn.Sequential) and model.conv1.in_channels == 1
    assert all(torch.all(m.weight == 1) for m in batch_norms(model))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with_bn = construct_network('resnet18', 10, 'fashionmnist', bn_weight=1, input_norm='bn')
    assert torch.equal(with_bn[0].weight, torch.tensor([INPUT_BN_FACTOR]))


def test_bottleneck_network_and_imagenet_stem():
    model = construct_network('resnet50', 10, 'cifar10', bn_weight=0.2, input_norm='bn')
    assert len(batch_norms(model)) == 54  # 53 in the ResNet-50, plus the input BN
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    imagenet = construct_network('resnet18', 1000, 'imagenet', input_norm='dataset')
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize('network_name, parameters', [('resnet20', 269_722), ('resnet56', 853_018),
                                                      ('resnet110', 1_727_962), ('mlp', 199_274)])
def test_small_networks_have_he_et_al_and_seed_003s_sizes(network_name, parameters):
    """For 10 classes on 3-channel 32x32 input, without the input BN: He et al.'s CIFAR ResNets (6n + 2 layers,
    option-A shortcuts: no parameters) and the MLP."""
    with torch.device('meta'):
        model = construct_network(network_name, 10, 'cifar10', 0.1, 'dataset')
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_cifar_resnet_shape_and_option_a_shortcut():
    torch.manual_seed(0)
    model = construct_network('resnet20', 10, 'fashionmnist', 0.1, 'bn')
    resnet = model[1]
    assert resnet.conv1.in_channels == 1 and resnet.conv1.out_channels == 16
    assert [len(stage) for stage in (resnet.layer1, resnet.layer2, resnet.layer3)] == [3, 3, 3]
    assert all(torch.all(m.weight == torch.tensor(0.1)) for m in batch_norms(resnet)) and len(batch_norms(resnet)) == 19
    block = resnet.layer2[0]
    x = torch.randn(2, 16, 8, 8)
    shortcut = block.shortcut(x)  # stride 2, channels 16 -> 32: every other pixel, 8 zero channels either side
    assert shortcut.shape == (2, 32, 4, 4) and torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert not shortcut[:, :8].any() and not shortcut[:, 24:].any()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_mlp_is_seed_003s_with_the_chosen_norm_and_the_papers_treatment():
    torch.manual_seed(0)
    model = construct_network('mlp', 10, 'cifar10', 0.1, 'bn')
    mlp = model[1]
    assert [type(m).__name__ for m in mlp] == ['Flatten', 'Linear', 'ScaleBatchNorm1d', 'ReLU', 'Linear',
                                               'ScaleBatchNorm1d', 'ReLU', 'Linear']
    assert [m.out_features for m in mlp if isinstance(m, nn.Linear)] == [64, 32, 10]
    assert all(torch.all(m.weight == torch.tensor(0.1)) for m in batch_norms(mlp))
    assert mlp[1].weight.abs().max() <= math.sqrt(6 / 3072) and all(not m.bias.any() for m in mlp if
                                                                  isinstance(m, nn.Linear))
    without = construct_network('mlp', 10, 'cifar10', 1, 'dataset', norm='none')
    assert not batch_norms(without) and [type(m).__name__ for m in without][2] == 'Identity'


def test_mabn_networks_use_centred_convolutions_and_train_only_norms_freezes_the_rest():
    from revisiting_bn.batch_norm import CenConv2d, MABN2d
    from revisiting_bn.networks import train_only_norms
    model = construct_network('resnet20', 10, 'cifar10', 0.1, 'dataset', norm='mabn',
                              norm_options={'B': 4, 'real_B': 8})
    assert all(type(m) is CenConv2d for m in model.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, MABN2d) for m in model.modules()) == 19
    frozen = train_only_norms(construct_network('resnet20', 10, 'cifar10', 0.1, 'bn'))
    trainable = [n for n, p in frozen.named_parameters() if p.requires_grad]
    assert trainable == [n for n, m in frozen.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                         for n in ([f'{n}.weight', f'{n}.bias'] if n != '0' else ['0.weight'])]


TORCHVISION_NETWORKS = ['mobilenet_v2', 'densenet121', 'efficientnet_b0', 'regnet_y_400mf', 'vgg11_bn',
                        'wide_resnet50_2', 'resnext50_32x4d']


@pytest.mark.parametrize('name', TORCHVISION_NETWORKS)
def test_torchvision_networks_get_scale_bn_and_the_papers_groups(name):
    from revisiting_bn.batch_norm import ScaleBatchNorm1d, ScaleBatchNorm3d
    from revisiting_bn.data import DatasetInfo
    from revisiting_bn.weight_decay_and_learning_rate import adjust_weight_decay_and_learning_rate
    torch.manual_seed(0)
    network = construct_network(f'tv:{name}', 7, DatasetInfo(3, 32, 7), bn_weight=0.1, input_norm='bn')
    input_bn, body = network[0], network[1]
    norms = batch_norms(body)
    assert norms and all(type(m) in (ScaleBatchNorm1d, ScaleBatchNorm2d, ScaleBatchNorm3d) for m in norms)
    assert all(torch.all(m.weight == 0.1) and torch.all(m.bias == 0) for m in norms)  # after torchvision's init
    assert torch.allclose(input_bn.weight, torch.tensor(0.1 * INPUT_BN_FACTOR)) and not input_bn.bias.requires_grad
    groups = {g['name']: g for g in adjust_weight_decay_and_learning_rate(network, 1e-4, 0.1, 100)}
    scales = {id(m.weight) for m in batch_norms(network)}
    assert {id(p) for p in groups['norm_scale']['params']} == scales and groups['norm_scale']['lr'] == 0.001
    assert not scales & {id(p) for p in groups['weight']['params']}
    assert {id(m.bias) for m in norms} <= {id(p) for p in groups['bias']['params']}
    assert network.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_a_torchvision_network_takes_grey_images_by_repeating_the_channel():
    from revisiting_bn.data import DatasetInfo
    network = construct_network('tv:mobilenet_v2', 10, DatasetInfo(1, 28, 10), bn_weight=0.1, input_norm='bn')
    assert network[0].num_features == 1 and network.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize('size, small', [(28, True), (64, True), (65, False), (224, False)])
def test_the_resnet_stem_follows_the_image_size(size, small):
    from revisiting_bn.data import DatasetInfo
    network = construct_network('resnet18', 10, DatasetInfo(3, size, 10), input_norm='dataset')
    assert network.conv1.kernel_size == ((3, 3) if small else (7, 7))
    assert isinstance(network.maxpool, nn.Identity) == small


def test_a_timm_model_trains_through_train_py_with_its_scales_at_bn_weight(tmp_path, capsys):
    """One epoch of timm:regnety_002 on fake data: every BN scale starts at bn_weight (timm's zero-initialised ones
    too, said in one line), BatchNormAct2d's scales train with lr / c, and the per-layer statistics cover its BN
    layers with x_hat measured before their activation."""
    pytest.importorskip('timm')
    import train
    record = train.main(['--dataset', 'fake', '--fake_size', '200', '--batch_size', '64', '--device', 'cpu',
                         '--network', 'timm:regnety_002', '--num_epochs', '1', '--path', str(tmp_path)])
    out = capsys.readouterr().out
    assert record['status'] == 'finished'
    assert ('NOTE: timm:regnety_002: timm starts the scale of 13 of its 44 BN layers (the last of each residual block) '
            'at 0; the method starts every BN scale at 0.1, so they do too') in out
    stats = record['norm_statistics']
    assert len(stats['layers']) == 45 and stats['layers'][0] == 'input_bn'
    start = stats['epochs'][0]['layers']
    assert all(start[name]['gamma_mean'] == pytest.approx(0.1) for name in stats['layers'][1:])


def test_the_groups_and_statistics_cover_batch_norm_with_an_activation():
    pytest.importorskip('timm')
    from timm.layers import BatchNormAct2d
    from revisiting_bn.norm_statistics import NormStatistics
    from revisiting_bn.weight_decay_and_learning_rate import adjust_weight_decay_and_learning_rate
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct2d(8, act_layer=nn.ReLU), nn.Flatten(), nn.Linear(8 * 36, 2))
    groups = adjust_weight_decay_and_learning_rate(model, 1e-4, 0.1, c=100)
    assert [p is model[1].weight for p in groups[1]['params']] == [True] and groups[1]['lr'] == 0.001
    images = torch.randn(16, 3, 8, 8)
    measured = NormStatistics(model, images).measure(batch_statistics=True)['1']
    x = model[0](images).detach()
    x_hat = (x - x.mean((0, 2, 3), keepdim=True)) / (x.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert measured['xhat_max_abs'] == pytest.approx(x_hat.abs().max().item(), rel=1e-5)  # before the ReLU: its
    assert measured['xhat_rms'] == pytest.approx(x_hat.pow(2).mean().sqrt().item(), rel=1e-5)  # negatives count
    after = model[1].train()(x).detach()
    assert measured['output_rms'] == pytest.approx(after.pow(2).mean().sqrt().item(), rel=1e-5)  # after the ReLU


def test_timm_asked_for_without_it_or_without_batch_norm_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util
    import train
    flags = ['--dataset', 'fake', '--fake_size', '200', '--device', 'cpu', '--num_epochs', '1', '--path', str(tmp_path)]
    plain = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'timm' else plain(name, *a))
    with pytest.raises(SystemExit) as refused:
        train.run(flags + ['--network', 'timm:resnet18'])
    assert refused.value.code == 2 and capsys.readouterr().err.strip() == (
        "train.py: error: --network timm:resnet18 needs timm: pip install 'revisiting-bn[timm]' (or: pip install -r "
        "requirements-timm.txt)")
    monkeypatch.undo()
    pytest.importorskip('timm')
    with pytest.raises(SystemExit) as refused:
        train.run(flags + ['--network', 'timm:vit_tiny_patch16_224'])
    err = capsys.readouterr().err.strip().splitlines()
    assert refused.value.code == 2 and len(err) == 1 and 'timm:vit_tiny_patch16_224 has no batch norm layer' in err[0]
    assert not (tmp_path / 'fake').exists()
