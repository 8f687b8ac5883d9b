"""ScaleBatchNorm (identical to torch BN but for its initial scale, the original's positional arguments, working
with PyTorch's own tools), MABN and CenConv2d against the official arithmetic, the affine and running-statistics
switches."""
from functools import partial

import pytest
import torch
import torch.nn as nn
import torchvision

from revisiting_bn.batch_norm import (CenConv2d, MABN2d, ScaleBatchNorm1d, ScaleBatchNorm2d, ScaleBatchNorm3d,
                        convert_to_scale_batch_norm, resolve_bn_weight, to_plain_batch_norm)
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


@pytest.mark.parametrize('convert', [lambda m: convert_to_scale_batch_norm(m, 0.1), to_plain_batch_norm])
def test_conversions_keep_the_parameters_so_an_earlier_optimizer_still_trains_them(convert):
    """As nn.SyncBatchNorm.convert_sync_batchnorm: the new layers hold the same Parameter and buffer objects, so SGD
    made before the conversion moves the converted layers' scales (a copy would leave them where they are)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    if convert is to_plain_batch_norm:
        model = convert_to_scale_batch_norm(model, 0.1)
    old = model[1]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    converted = convert(model)
    layer = converted[1]
    assert type(layer) is not type(old)
    assert layer.weight is old.weight and layer.bias is old.bias and layer.running_mean is old.running_mean
    assert layer.running_var is old.running_var and layer.num_batches_tracked is old.num_batches_tracked
    before = layer.weight.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        converted(torch.randn(8, 3, 6, 6)).pow(2).mean().backward()
        optimizer.step()
    assert not torch.equal(layer.weight, before)


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


class OfficialMABNStep(torch.autograd.Function):
    """The official MABN.py's training arithmetic, written out with the iteration counter read on the host (as
    the official reads iters.item()): the oracle that MABN2d, which keeps it on the device, must equal."""

    @staticmethod
    def forward(ctx, x, weight, bias, state):
        i, size, C = state['iters'], state['buffer_size'], x.shape[1]
        x2 = (x * x).mean(dim=3).mean(dim=2).mean(dim=0)
        state['buffer_x2'][i % size].copy_(x2)
        var = (x2 if i <= size or i < state['warmup'] else state['buffer_x2'].mean(dim=0)).view(1, C, 1, 1)
        z = x / (var + 1e-5).sqrt()
        r = (var + 1e-5).sqrt() / (state['running_var'] + 1e-5).sqrt()
        r = torch.clamp(r, 1, 1) if i <= max(1000, state['warmup']) else torch.clamp(r, 1 / 5, 5)
        ctx.save_for_backward(z, var, weight, r)
        ctx.state = state
        state['running_var'].copy_(0.98 * state['running_var'] + (1 - 0.98) * var)
        return weight.view(1, C, 1, 1) * (r * z) + bias.view(1, C, 1, 1)

    @staticmethod
    def backward(ctx, grad_output):
        z, var, weight, r = ctx.saved_tensors
        state, C = ctx.state, grad_output.shape[1]
        i, size = state['iters'], state['buffer_size']
        g = grad_output * weight.view(1, C, 1, 1) * r
        gz = (g * z).mean(dim=3).mean(dim=2).mean(dim=0)
        state['buffer_gz'][i % size].copy_(gz)
        mean_gz = (gz if i <= size or i < state['warmup'] else state['buffer_gz'].mean(dim=0)).view(1, C, 1, 1)
        gx = 1. / torch.sqrt(var + 1e-5) * (g - z * mean_gz)
        y = r * z
        grad_weight = (grad_output * y).sum(dim=3).sum(dim=2).sum(dim=0)
        return gx, grad_weight, grad_output.sum(dim=3).sum(dim=2).sum(dim=0), None


def test_mabn_equals_the_official_arithmetic_bit_for_bit():
    """1,010 training steps with a buffer of 4 iterations and 5 warm-up iterations: batch statistics first, then
    the moving averages, then (after iteration 1,000) the renormalisation r clamped to [1/5, 5]. Outputs,
    gradients, running variance and both buffers equal the official arithmetic bit for bit; then evaluation."""
    torch.manual_seed(0)
    layer = MABN2d(3, B=2, real_B=8, warmup_iters=5, bn_weight=0.5)
    weight, bias = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
    state = {'iters': 0, 'buffer_size': 4, 'warmup': 5, 'running_var': torch.ones(1, 3, 1, 1),
             'buffer_x2': torch.zeros(4, 3), 'buffer_gz': torch.zeros(4, 3)}
    clamped = 0
    for step in range(1010):
        x = (torch.randn(2, 3, 4, 4) * (1 + step % 7)).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        grad = torch.randn(2, 3, 4, 4)
        y = layer(x)
        state['iters'] += 1
        y_ref = OfficialMABNStep.apply(x_ref, weight, bias, state)
        y.backward(grad)
        y_ref.backward(grad)
        assert torch.equal(y, y_ref) and torch.equal(x.grad, x_ref.grad), step
        clamped += int(state['iters'] > 1000 and not torch.equal(y_ref, weight.view(1, 3, 1, 1) * (
            x_ref / (state['buffer_x2'].mean(0).view(1, 3, 1, 1) + 1e-5).sqrt()) + bias.view(1, 3, 1, 1)))
    assert torch.equal(layer.weight.grad, weight.grad) and torch.equal(layer.bias.grad, bias.grad)
    for name in ('running_var', 'buffer_x2', 'buffer_gz'):
        assert torch.equal(getattr(layer, name), state[name]), name
    assert layer.iters.tolist() == [1010] and clamped > 0  # the renormalisation really acted after 1,000
    layer.eval()
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(layer(x), weight.view(1, 3, 1, 1) * (x / (state['running_var'] + 1e-5).sqrt())
                       + bias.view(1, 3, 1, 1))


def test_mabn_and_cenconv_match_the_official_interface():
    layer = MABN2d(8, 4, 32)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {
        'weight': (8,), 'bias': (8,), 'running_var': (1, 8, 1, 1), 'iters': (1,), 'buffer_x2': (8, 8),
        'buffer_gz': (8, 8)}
    assert layer.iters.dtype == torch.long and layer.momentum == 0.98 and layer.warmup_iters == 100
    assert torch.all(MABN2d(4, 2, 8, bn_weight=0.1).weight == torch.tensor(0.1))
    with pytest.raises(ValueError, match='real_B divisible by B'):
        MABN2d(4, 3, 8)
    conv = CenConv2d(3, 5, kernel_size=3, padding=1)
    assert isinstance(conv, nn.Conv2d) and conv.bias is None and tuple(conv.weight.shape) == (5, 3, 3, 3)
    x = torch.randn(2, 3, 6, 6)
    centred = conv.weight - conv.weight.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True)
    assert torch.equal(conv(x), torch.nn.functional.conv2d(x, centred, None, 1, 1))
    # Each filter sums to 0 (up to float32 rounding of 27 terms), so a constant image gives 0 away from the border
    assert conv(torch.ones(1, 3, 6, 6))[..., 1:-1, 1:-1].abs().max() < 27 * 2 ** -23 * conv.weight.abs().max()


def test_affine_and_running_statistics_switches_pass_through():
    """BN's affine and running-statistics switches: without affine no scale or shift; without running statistics,
    evaluation normalises with the batch's own statistics, as nn.BatchNorm2d(track_running_stats=False) does."""
    from revisiting_bn.networks import construct_network
    options = {'affine': False, 'track_running_stats': False}
    model = construct_network('resnet20', 10, 'cifar10', 1, 'bn', norm_options=options)
    layers = batch_norms(model)
    assert len(layers) == 20 and all(not m.affine and m.running_mean is None for m in layers)
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    reference = nn.BatchNorm2d(3, affine=False, track_running_stats=False).eval()
    assert torch.equal(model[0](x), reference(x))  # the input BN: batch statistics in eval mode


def trained_scale_resnet():
    """A torchvision ResNet-18 built with the paper's norm_layer, its BN statistics moved off their start by three
    training-mode passes, in eval mode; and an input with its output."""
    torch.manual_seed(0)
    network = torchvision.models.resnet18(num_classes=10, norm_layer=partial(ScaleBatchNorm2d, bn_weight=0.1))
    with torch.no_grad():
        for _ in range(3):
            network(torch.randn(4, 3, 32, 32) * 2 + 1)
    network.eval()
    images = torch.randn(2, 3, 32, 32)
    return network, images, network(images).detach()


@pytest.mark.parametrize('tool', ['torch.jit.script', 'torch.fx.symbolic_trace', 'torch.export', 'torch.compile'])
def test_scale_layers_work_with_pytorch_tools(tool):
    """Scripted, traced, exported and compiled (the dynamo frontend, whole graph), the ResNet computes what the
    eager one does, bit for bit."""
    network, images, expected = trained_scale_resnet()
    if tool == 'torch.jit.script':
        converted = torch.jit.script(network)
    elif tool == 'torch.fx.symbolic_trace':
        converted = torch.fx.symbolic_trace(network)
    elif tool == 'torch.export':
        converted = torch.export.export(network, (images,)).module()
    else:
        converted = torch.compile(network, backend='aot_eager', fullgraph=True)
    with torch.no_grad():
        assert torch.equal(converted(images), expected)


def test_scale_layers_export_to_onnx():
    """The ONNX file, run by ONNX Runtime, computes the eager output up to float rounding."""
    import inspect
    import io
    pytest.importorskip('onnx')
    onnxruntime = pytest.importorskip('onnxruntime')
    network, images, expected = trained_scale_resnet()
    model = io.BytesIO()
    legacy = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(network, (images,), model, **legacy)  # the TorchScript-based exporter needs no onnxscript
    session = onnxruntime.InferenceSession(model.getvalue())
    outputs = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    assert torch.allclose(torch.from_numpy(outputs), expected, rtol=1e-4, atol=1e-5)


def test_to_plain_batch_norm_keeps_the_state_for_conv_bn_fusion():
    """to_plain_batch_norm turns every Scale layer into the plain nn.BatchNorm2d (same state_dict, same outputs),
    which conv-BN fusion (torch.ao.quantization.fuse_modules, torch.fx's fuse) insists on."""
    from torch.fx.experimental.optimization import fuse
    network, images, expected = trained_scale_resnet()
    state = {k: v.clone() for k, v in network.state_dict().items()}
    plain = to_plain_batch_norm(network)
    assert not [m for m in plain.modules() if isinstance(m, ScaleBatchNorm2d)]
    assert sum(type(m) is nn.BatchNorm2d for m in plain.modules()) == 20 and not plain.training
    assert plain.state_dict().keys() == state.keys() and all(torch.equal(plain.state_dict()[k], v)
                                                             for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(plain(images), expected)
        fused = torch.ao.quantization.fuse_modules(plain, [['conv1', 'bn1'], ['layer1.0.conv1', 'layer1.0.bn1']])
        assert isinstance(fused.bn1, nn.Identity)
        assert torch.allclose(fused(images), expected, rtol=1e-4, atol=1e-5)
        assert torch.allclose(fuse(to_plain_batch_norm(trained_scale_resnet()[0]))(images), expected, rtol=1e-4,
                              atol=1e-5)
    assert type(to_plain_batch_norm(ScaleBatchNorm1d(3, bn_weight=0.1))) is nn.BatchNorm1d


def test_sync_batch_norm_keeps_its_synchronisation_and_a_lazy_one_is_refused():
    """A SyncBatchNorm is a batch norm of its own kind: it keeps its class (its synchronisation) and gets the method's
    start in its own Parameters, whichever is converted first; a lazy layer's size cannot be guessed: refused in one
    line saying what to do."""
    with pytest.raises(ValueError, match='has no size yet') as error:
        convert_to_scale_batch_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyBatchNorm2d()), 0.1)
    assert '\n' not in str(error.value)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4))
    weight = model[1].weight
    converted = convert_to_scale_batch_norm(model, 0.1)
    assert type(converted[1]) is nn.SyncBatchNorm and converted[1].weight is weight and torch.all(weight == 0.1)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(
        convert_to_scale_batch_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 0.1))
    assert isinstance(synced[1], nn.SyncBatchNorm) and torch.all(synced[1].weight == 0.1)


TIMM_MODELS = ['efficientnet_b0', 'mobilenetv3_small_100', 'regnety_002', 'resnet18']


def by_hand(model, bn_weight):
    """The same model with every batch-norm scale and shift set by hand, its classes and activations untouched."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                module.weight.fill_(bn_weight)
                module.bias.zero_()
    return model


@pytest.mark.parametrize('name', TIMM_MODELS)
def test_timm_models_get_every_scale_and_keep_their_activations(name):
    """timm's BatchNormAct2d (a BatchNorm2d that applies its activation too) keeps its class, activation and dropout;
    every batch-norm layer's scale is at bn_weight and its shift at 0, and the converted model computes what the same
    model with those values set by hand computes."""
    timm = pytest.importorskip('timm')
    import copy
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    expected = by_hand(copy.deepcopy(model), 0.1)
    before = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    kinds, acts = [type(m) for m in before], [(getattr(m, 'act', None), getattr(m, 'drop', None)) for m in before]
    converted = convert_to_scale_batch_norm(model, 0.1)
    layers = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert layers and all(torch.all(m.weight == 0.1) and torch.all(m.bias == 0) for m in layers)
    for kind, kept, layer in zip(kinds, acts, layers):
        assert type(layer) is ({nn.BatchNorm2d: ScaleBatchNorm2d}.get(kind, kind))  # a subclass keeps its class
        assert (getattr(layer, 'act', None), getattr(layer, 'drop', None)) == kept  # and its activation and dropout
    assert name == 'resnet18' or any(not isinstance(act, (nn.Identity, type(None))) for act, _ in acts)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(converted(images), expected(images))
    plain = to_plain_batch_norm(converted)  # undoes only what convert changed: the plain layers' class
    assert [type(m) for m in plain.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == kinds


def test_an_optimizer_made_before_a_subclass_is_converted_still_trains_it():
    timm = pytest.importorskip('timm')
    from timm.layers import BatchNormAct2d
    model = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    convert_to_scale_batch_norm(model, 0.1)
    assert isinstance(model[1], BatchNormAct2d) and torch.all(model[1].weight == 0.1)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 3, 8, 8)), torch.arange(8) % 2).backward()
        optimizer.step()
    assert not torch.all(model[1].weight == 0.1)


def test_normalisation_that_is_not_batch_norm_is_named_and_none_at_all_refused():
    from torchvision.ops.misc import FrozenBatchNorm2d
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), FrozenBatchNorm2d(4),
                          nn.LayerNorm(4))
    with pytest.warns(UserWarning, match=r'3 normalisation layers not batch norm keep its own start: 2 \(GroupNorm\), '
                                         r'3 \(FrozenBatchNorm2d\), 4 \(LayerNorm\)'):
        convert_to_scale_batch_norm(model, 0.1)
    assert torch.all(model[1].weight == 0.1) and torch.all(model[2].weight == 1)
    with pytest.raises(ValueError, match='has no batch-norm layer, so the method has nothing to act on'):
        convert_to_scale_batch_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)), 0.1)
