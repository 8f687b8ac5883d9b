from functools import partial

import pytest
import torch
import torch.nn as nn
import torchvision

from batch_norm import (ScaleBatchNorm1d, ScaleBatchNorm2d, ScaleBatchNorm3d, convert_to_scale_batch_norm,
                        resolve_bn_weight)
from conftest import batch_norms


def paired(scale_class, torch_class, shape, **kwargs):
    """A Scale layer and a torch layer with identical (random) parameters, plus one input."""
    torch.manual_seed(0)
    ours, reference = scale_class(shape[1], bn_weight=0.3, **kwargs), torch_class(shape[1], **kwargs)
    if reference.affine:
        with torch.no_grad():
            reference.weight.copy_(torch.rand(shape[1]) + 0.5)
            reference.bias.copy_(torch.randn(shape[1]))
    ours.load_state_dict(reference.state_dict())
    return ours, reference, torch.randn(*shape) * 3 + 1


@pytest.mark.parametrize('scale_class, torch_class, shape', [
    (ScaleBatchNorm2d, nn.BatchNorm2d, (8, 4, 5, 5)),
    (ScaleBatchNorm1d, nn.BatchNorm1d, (8, 4)),
    (ScaleBatchNorm1d, nn.BatchNorm1d, (8, 4, 7)),
    (ScaleBatchNorm3d, nn.BatchNorm3d, (4, 3, 2, 3, 3)),
])
@pytest.mark.parametrize('kwargs', [{}, {'affine': False}, {'track_running_stats': False},
                                    {'momentum': None, 'eps': 1e-3}])
def test_identical_to_torch_batch_norm(scale_class, torch_class, shape, kwargs):
    ours, reference, x = paired(scale_class, torch_class, shape, **kwargs)
    assert list(ours.state_dict()) == list(reference.state_dict())
    for _ in range(3):  # train mode: outputs, gradients and running statistics
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = ours(x1), reference(x2)
        assert torch.equal(y1, y2)
        grad = torch.randn_like(y1)
        y1.backward(grad)
        y2.backward(grad)
        assert torch.equal(x1.grad, x2.grad)
        if reference.affine:
            assert torch.equal(ours.weight.grad, reference.weight.grad)
            assert torch.equal(ours.bias.grad, reference.bias.grad)
        x = x * 1.1 + 0.2
    for a, b in zip(ours.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)
    ours.eval(), reference.eval()
    assert torch.equal(ours(x), reference(x))


def test_initial_scale_and_shift():
    bn = ScaleBatchNorm2d(16, bn_weight=0.1)
    assert torch.all(bn.weight == torch.tensor(0.1)) and torch.all(bn.bias == 0)
    assert torch.all(ScaleBatchNorm2d(4).weight == 1)
    for value in (0, -1, -0.5):
        assert resolve_bn_weight(value) == 1.0
        assert torch.all(ScaleBatchNorm1d(4, bn_weight=value).weight == 1)
    with pytest.raises(ValueError, match='finite'):
        ScaleBatchNorm2d(4, bn_weight=float('nan'))
    with pytest.raises(ValueError, match='number'):
        ScaleBatchNorm2d(4, bn_weight='big')


def test_positional_arguments_are_the_original_codes():
    """The original's signature is (num_features, eps, momentum, affine, bn_weight): the 5th is bn_weight."""
    bn = ScaleBatchNorm2d(64, 1e-5, 0.1, True, 0.1)
    assert torch.all(bn.weight == torch.tensor(0.1)) and bn.track_running_stats
    with pytest.raises(ValueError, match='5th positional argument is bn_weight'):
        ScaleBatchNorm2d(64, 1e-5, 0.1, True, False)  # torch's order would mean track_running_stats=False
    assert ScaleBatchNorm2d(4, track_running_stats=False).running_mean is None


def test_weights_load_into_either_class():
    ours = ScaleBatchNorm2d(6, bn_weight=0.2)
    ours(torch.randn(4, 6, 3, 3))
    reference = nn.BatchNorm2d(6)
    reference.load_state_dict(ours.state_dict())
    back = ScaleBatchNorm2d(6, bn_weight=0.9)
    back.load_state_dict(reference.state_dict())
    for a, b in zip(back.state_dict().values(), ours.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize('layer, bad', [
    (ScaleBatchNorm2d(3), torch.randn(2, 3, 4)),
    (ScaleBatchNorm2d(3), torch.randn(2, 3)),
    (ScaleBatchNorm1d(3), torch.randn(2, 3, 4, 4)),
    (ScaleBatchNorm3d(3), torch.randn(2, 3, 4, 4)),
])
def test_wrong_input_rank_raises_value_error(layer, bad):
    with pytest.raises(ValueError, match=f'expects a .* got a {bad.dim()}-D input'):
        layer(bad)


def test_repr_shows_usual_fields_and_bn_weight():
    text = repr(ScaleBatchNorm2d(64, eps=1e-3, momentum=0.2, bn_weight=0.1))
    assert text.startswith('ScaleBatchNorm2d(64, eps=0.001, momentum=0.2, affine=True')
    assert 'track_running_stats=True' in text and text.endswith('bn_weight=0.1)')


def test_survives_torchvision_reinitialisation():
    # torchvision's ResNet sets every nn.BatchNorm2d scale to 1 after construction.
    model = torchvision.models.resnet18(num_classes=10, norm_layer=partial(ScaleBatchNorm2d, bn_weight=0.1))
    found = batch_norms(model)
    assert len(found) == 20 and all(isinstance(m, ScaleBatchNorm2d) for m in found)
    assert all(torch.all(m.weight == torch.tensor(0.1)) for m in found)


def test_convert_keeps_settings_statistics_and_mode():
    model = torchvision.models.mobilenet_v3_small(num_classes=5)
    model.train()
    model(torch.randn(4, 3, 64, 64))  # give every BN real running statistics
    model.features[1].eval()
    before = {name: (type(m), m.eps, m.momentum, m.affine, m.running_mean.clone(), m.running_var.clone(),
                     m.num_batches_tracked.clone(), m.training)
              for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert before
    converted = convert_to_scale_batch_norm(model, bn_weight=0.25)
    assert converted is model
    after = dict(model.named_modules())
    for name, (_, eps, momentum, affine, mean, var, tracked, training) in before.items():
        m = after[name]
        assert type(m) is ScaleBatchNorm2d and m.bn_weight == 0.25
        assert (m.eps, m.momentum, m.affine, m.training) == (eps, momentum, affine, training)
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert torch.equal(m.num_batches_tracked, tracked)
        assert torch.all(m.weight == 0.25) and torch.all(m.bias == 0)
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())


def test_convert_root_nested_containers_and_1d():
    root = nn.BatchNorm1d(5, eps=1e-3, affine=False).eval()
    converted = convert_to_scale_batch_norm(root, 0.5)
    assert type(converted) is ScaleBatchNorm1d and not converted.training and converted.eps == 1e-3
    model = nn.ModuleDict({'a': nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)),
                           'b': nn.ModuleList([nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2))])})
    convert_to_scale_batch_norm(model, 0.2)
    assert type(model['a'][1]) is ScaleBatchNorm1d and type(model['b'][0][1]) is ScaleBatchNorm3d
    assert torch.all(model['b'][0][1].weight == 0.2)
    frozen = nn.BatchNorm2d(3)
    frozen.weight.requires_grad_(False)
    assert not convert_to_scale_batch_norm(frozen, 0.1).weight.requires_grad
