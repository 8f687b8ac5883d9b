"""Parameter groups equal to the original code's on every network, any model, any optimizer, lr / c, and
the original's SGD and schedule."""
import math

import pytest
import torch
import torch.nn as nn

from conftest import batch_norms, original_parameter_groups
from revisiting_bn.networks import NETWORKS, construct_network
from revisiting_bn.weight_decay_and_learning_rate import adjust_weight_decay_and_learning_rate, build_optimizer


def ids(params):
    return {id(p) for p in params}


def by_name(groups):
    return {g['name']: g for g in groups}


def test_resnet_groups_cover_every_trainable_parameter_once():
    model = construct_network('resnet18', 10, 'cifar10', bn_weight=0.1, input_norm='bn')
    groups = by_name(adjust_weight_decay_and_learning_rate(model, weight_decay=1e-4, learning_rate=0.1, c=100))
    assert list(groups) == ['bias', 'norm_scale', 'weight']
    named = dict(model.named_parameters())
    trainable = {id(p) for p in named.values() if p.requires_grad}
    members = [id(p) for g in groups.values() for p in g['params']]
    assert len(members) == len(set(members)) and set(members) == trainable
    norms = batch_norms(model)
    assert ids(groups['norm_scale']['params']) == {id(m.weight) for m in norms}
    assert id(model[0].bias) not in set(members)  # the frozen input-BN shift
    assert ids(groups['bias']['params']) == {id(p) for n, p in named.items() if n.endswith('bias') and p.requires_grad}
    assert (groups['bias']['weight_decay'], groups['norm_scale']['weight_decay']) == (0.0, 0.0)
    assert groups['weight']['weight_decay'] == 1e-4
    assert groups['norm_scale']['lr'] == 0.1 / 100
    assert 'lr' not in groups['bias'] and 'lr' not in groups['weight']  # they take the optimizer's, as the original


@pytest.mark.parametrize('network_name', NETWORKS)  # the original's five, and ours
@pytest.mark.parametrize('input_norm, c', [('bn', 100), ('dataset', 1)])
def test_groups_equal_the_original_codes_for_every_network(network_name, input_norm, c):
    """The original sorts by shape and name (conftest.original_parameter_groups); ours finds scales by module type.
    On every network construct_network builds for 3-channel data the groups hold the same parameters in the
    same order with the same settings."""
    with torch.device('meta'):  # shapes and names are all that matter here: skip the initialisation's cost
        model = construct_network(network_name, 10, 'cifar10', bn_weight=0.1, input_norm=input_norm)
    ours = adjust_weight_decay_and_learning_rate(model, weight_decay=1e-4, learning_rate=0.1, c=c)
    theirs = original_parameter_groups(model, weight_decay=1e-4, learning_rate=0.1, c=c)
    assert len(ours) == len(theirs) == 3
    for mine, original in zip(ours, theirs):
        assert [id(p) for p in mine['params']] == [id(p) for p in original['params']]
        assert {k: v for k, v in mine.items() if k not in ('params', 'name')} == {
            k: v for k, v in original.items() if k != 'params'}


@pytest.mark.parametrize('c', [0, 0.5, 1])
def test_no_reduction_unless_c_above_one(c):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    groups = by_name(adjust_weight_decay_and_learning_rate(model, learning_rate=0.3, c=c))
    assert all('lr' not in g for g in groups.values())  # every group takes the optimizer's learning rate
    optimizer = torch.optim.SGD(list(groups.values()), lr=0.3)
    assert [g['lr'] for g in optimizer.param_groups] == [0.3, 0.3, 0.3]


class Custom(nn.Module):
    """Norm scales found by module type; other 1-D parameters (the 'gain') get no weight decay, as in the original."""
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.group = nn.GroupNorm(2, 8)
        self.layer = nn.LayerNorm(8)
        self.tied = self.embed  # shared module: its parameters must appear once
        self.gain = nn.Parameter(torch.ones(8))
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.frozen(self.layer(self.group(self.embed(x)))) * self.gain)


def test_any_model_and_skip_list():
    model = Custom()
    groups = by_name(adjust_weight_decay_and_learning_rate(model, c=10, skip_list=('head.weight', 'embed.bias')))
    # As in the original, a skip_list name containing 'weight' joins the lr / c group.
    assert ids(groups['norm_scale']['params']) == ids([model.group.weight, model.layer.weight, model.head.weight])
    assert ids(groups['bias']['params']) == ids([model.embed.bias, model.group.bias, model.layer.bias,
                                                model.gain, model.head.bias])
    assert ids(groups['weight']['params']) == ids([model.embed.weight])
    with pytest.raises(ValueError, match='head.wieght'):
        adjust_weight_decay_and_learning_rate(model, skip_list=('head.wieght',))


@pytest.mark.parametrize('optimizer', [
    lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9), lambda g: torch.optim.Adam(g),
    lambda g: torch.optim.AdamW(g), lambda g: torch.optim.RMSprop(g)])
def test_works_with_torch_optimizers(optimizer):
    model = Custom()
    opt = optimizer(adjust_weight_decay_and_learning_rate(model, weight_decay=0.1, learning_rate=0.01, c=100))
    before = model.group.weight.detach().clone()
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    assert opt.param_groups[1]['lr'] == 0.0001  # the scales' lr / c; the others keep the optimizer's own lr
    assert opt.param_groups[0]['lr'] == opt.param_groups[2]['lr'] == opt.defaults['lr']
    assert not torch.equal(before, model.group.weight)


def test_scale_update_is_c_times_smaller():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).double()
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    steps = []
    for c in (1, 100):
        model.load_state_dict(start)
        opt = torch.optim.SGD(adjust_weight_decay_and_learning_rate(model, 0.0, 0.5, c), lr=0.5)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        steps.append({n: (p - start[n]).detach() for n, p in model.named_parameters()})
    assert steps[0]['1.weight'].abs().min() > 1e-4
    # Each step is read back as (w - lr x g) - w in float64: the subtraction loses up to ulp(w) ~ 2e-16 against
    # a step of >= 1e-6 (c = 100), so the two agree to ~2e-10 relative; a wrong c is off by a factor.
    assert torch.allclose(steps[0]['1.weight'] / 100, steps[1]['1.weight'], rtol=1e-9, atol=0)
    assert torch.allclose(steps[0]['0.weight'], steps[1]['0.weight'], rtol=1e-9, atol=0)


@pytest.mark.parametrize('kwargs', [{'weight_decay': -1}, {'learning_rate': float('nan')}, {'c': -5},
                                    {'c': float('inf')}, {'learning_rate': '0.1'}])
def test_bad_values(kwargs):
    with pytest.raises(ValueError, match='finite number >= 0'):
        adjust_weight_decay_and_learning_rate(nn.Linear(2, 2), **kwargs)


def test_build_optimizer_is_the_originals_sgd_and_schedule():
    network = construct_network('resnet18', 10, 'fake', 0.1, 'bn')
    optimizer, scheduler = build_optimizer(network, 0.1, 0.9, 1e-4, 100, 'cos', num_epochs=4)
    assert [g['lr'] for g in optimizer.param_groups] == [0.1, 0.1 / 100, 0.1]
    assert [g['weight_decay'] for g in optimizer.param_groups] == [0, 0, 1e-4]
    assert all(g['momentum'] == 0.9 for g in optimizer.param_groups)
    for _ in range(2):
        optimizer.step()  # no gradients: changes nothing, keeps the scheduler's call order
        scheduler.step()
    # CosineAnnealingLR's recursive form against the closed form: a few float64 roundings apart
    cosine = lambda base: 1e-8 + (base - 1e-8) * (1 + math.cos(math.pi * 2 / 4)) / 2  # noqa: E731
    assert [g['lr'] for g in optimizer.param_groups] == pytest.approx([cosine(0.1), cosine(0.001), cosine(0.1)],
                                                                      rel=1e-12)
    optimizer, scheduler = build_optimizer(network, 0.1, 0.9, 0, 1, 'none', 4)  # the original's plain branch
    assert len(optimizer.param_groups) == 1 and scheduler is None
    assert len(optimizer.param_groups[0]['params']) == sum(p.requires_grad for p in network.parameters())
