
import pytest
import torch
import torch.nn as nn

from data import ImageBatches
from fast_path import LossScaler, TrainStep, autocast, sgd_step
from networks import construct_network
from weight_decay_and_learning_rate import adjust_weight_decay_and_learning_rate

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def small_network(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 4))


def optimizer_for(network, momentum=0.9):
    groups = adjust_weight_decay_and_learning_rate(network, weight_decay=1e-2, learning_rate=0.1, c=100)
    return torch.optim.SGD(groups, lr=0.1, momentum=momentum)


def sync(source, target, opt_source, opt_target):
    """Give ``target`` the weights, BN statistics and momentum buffers of ``source`` (in place, so a captured
    graph sees them too): the next step of each then starts from the same state, and any difference comes from
    that one step, not from rounding accumulated over earlier ones."""
    target.load_state_dict(source.state_dict())
    for p_source, p_target in zip(source.parameters(), target.parameters()):
        buffer = opt_source.state[p_source].get('momentum_buffer')
        if buffer is not None and 'momentum_buffer' in opt_target.state[p_target]:
            opt_target.state[p_target]['momentum_buffer'].copy_(buffer)


def assert_one_update_apart(reference, ours, opt_ref, opt_ours, before):
    """After one step of each from the same state (``before``) and batch: identical gradients, so identical
    momentum buffers (the same two roundings: buffer x momentum, + gradient + wd x weight) and BN statistics. The
    weights differ only in how the update is added: torch.optim.SGD adds -lr x buffer in one fused operation,
    sgd_step rounds the product first. That is at most one rounding of the update and one of the sum, each
    <= 2^-24 relative, so |ours - reference| <= 2 x 2^-23 x (|w| + |update|), with a factor 2 to spare. A real
    bug (a wrong lr or group, a missing weight decay or momentum term) is off by >= 1e-3 x |update|."""
    eps = torch.finfo(torch.float32).eps
    parameters = {name for name, _ in reference.named_parameters()}
    for (name, new), mine in zip(reference.state_dict().items(), ours.state_dict().values()):
        if name in parameters:
            bound = 2 * eps * (new.abs() + (new - before[name]).abs())
            assert ((mine - new).abs() <= bound).all(), (name, (mine - new).abs().max().item())
        else:
            assert torch.equal(mine, new), name
    for p_ref, p_ours in zip(reference.parameters(), ours.parameters()):
        buffer = opt_ref.state[p_ref].get('momentum_buffer')
        assert buffer is None or torch.equal(buffer, opt_ours.state[p_ours]['momentum_buffer'])


@pytest.mark.parametrize('momentum', [0.9, 0.0])
def test_sgd_step_with_tensor_lrs_matches_torch_sgd(momentum):
    """Step by step through a cosine schedule with the lr / c group, from synchronised states."""
    reference, ours = small_network(), small_network()
    opt_ref, opt_ours = optimizer_for(reference, momentum), optimizer_for(ours, momentum)
    sched_ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ref, T_max=4, eta_min=1e-8)
    sched_ours = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ours, T_max=4, eta_min=1e-8)
    negative_lrs = [torch.zeros(()) for _ in opt_ours.param_groups]
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    torch.manual_seed(1)
    for epoch in range(3):
        for step in range(3):
            x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
            sync(reference, ours, opt_ref, opt_ours)
            before = {k: v.clone() for k, v in reference.state_dict().items()}
            for network, opt in ((reference, opt_ref), (ours, opt_ours)):
                opt.zero_grad()
                nn.functional.cross_entropy(network(x), y).backward()
            opt_ref.step()
            if epoch == 0 and step == 0:
                opt_ours.step()  # creates the momentum buffers, as the warm-up steps do
            else:
                for tensor, group in zip(negative_lrs, opt_ours.param_groups):
                    tensor.fill_(-group['lr'])
                sgd_step(opt_ours, negative_lrs)
            assert_one_update_apart(reference, ours, opt_ref, opt_ours, before)
        sched_ref.step(), sched_ours.step()
        assert [g['lr'] for g in opt_ref.param_groups] == [g['lr'] for g in opt_ours.param_groups]
    moved = {n: (p - start[n]).abs().max().item() for n, p in reference.named_parameters() if n.endswith('weight')}
    assert min(moved.values()) > 1e-6, moved  # weights and the lr/c BN scales really trained


def test_sgd_step_refuses_other_optimizers():
    network = small_network()
    with pytest.raises(ValueError, match='torch.optim.SGD'):
        sgd_step(torch.optim.Adam(network.parameters()), [torch.zeros(())])
    with pytest.raises(ValueError, match='nesterov'):
        TrainStep(network, torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9, nesterov=True),
                  nn.CrossEntropyLoss(), 'cuda' if torch.cuda.is_available() else 'cpu', use_graph=True)


def test_graph_needs_cuda():
    network = small_network()
    with pytest.raises(ValueError, match='CUDA graphs need a CUDA device'):
        TrainStep(network, optimizer_for(network), nn.CrossEntropyLoss(), 'cpu', use_graph=True)


class OverflowAt(nn.Module):
    """Cross-entropy whose loss is made so large on the given (1-based) calls that the scaled loss overflows."""

    def __init__(self, calls):
        super().__init__()
        self.overflow_calls, self.calls = set(calls), 0

    def forward(self, logits, labels):
        self.calls += 1
        loss = nn.functional.cross_entropy(logits, labels)
        return loss * 1e38 if self.calls in self.overflow_calls else loss


@pytest.mark.filterwarnings(r'ignore:Detected call of `lr_scheduler\.step\(\)`')  # our SGD steps are sgd_step's
def test_fp16_step_with_device_loss_scaling_matches_grad_scaler_and_sgd():
    """Same batches through TrainStep's fp16 path and through torch.amp.GradScaler + torch.optim.SGD, from
    synchronised states at every step: overflowing steps are skipped (weights and momentum left exactly as they
    were), the scale backs off and grows by GradScaler's rule (exactly), and each step's update agrees up to
    the rounding of how it is added (assert_one_update_apart)."""
    reference, ours = small_network(), small_network()
    opt_ref, opt_ours = optimizer_for(reference), optimizer_for(ours)
    sched_ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ref, T_max=4, eta_min=1e-8)
    sched_ours = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ours, T_max=4, eta_min=1e-8)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 10, growth_interval=3)
    criterion_ref, overflow_calls = OverflowAt([1, 5, 6]), [1, 5, 6]  # the very first step too: no momentum yet
    step = TrainStep(ours, opt_ours, OverflowAt(overflow_calls), 'cpu', 'fp16', max_steps=4)
    step.scaler = LossScaler('cpu', init_scale=2.0 ** 10, growth_interval=3)
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    torch.manual_seed(1)
    scales, skipped = [], 0
    for epoch in range(3):
        step.begin_epoch()
        for _ in range(4):
            x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
            sync(reference, ours, opt_ref, opt_ours)
            before = {k: v.clone() for k, v in reference.state_dict().items()}
            opt_ref.zero_grad()
            with torch.autocast('cpu', dtype=torch.float16):
                loss = criterion_ref(reference(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt_ref)
            scaler.update()
            step(x, y)
            assert step.scaler.scale.item() == scaler.get_scale()
            scales.append(scaler.get_scale())
            assert_one_update_apart(reference, ours, opt_ref, opt_ours, before)
            if step.scaler.found_inf.item():
                skipped += 1
                assert all(torch.equal(ours.state_dict()[k], before[k]) for k, _ in ours.named_parameters())
        sched_ref.step(), sched_ours.step()
    assert skipped == 3 and scales[0] == 2.0 ** 9 and any(b > a for a, b in zip(scales, scales[1:]))  # backed off, grew
    state = step.scaler.state_dict()
    assert state['scale'] == scaler.state_dict()['scale'] and state['_growth_tracker'] == scaler.state_dict()[
        '_growth_tracker']
    restored = LossScaler('cpu')
    restored.load_state_dict(scaler.state_dict())  # GradScaler's format, as older checkpoints hold
    assert restored.scale.item() == scaler.get_scale() and restored.growth_interval == 3
    assert min((p - start[n]).abs().max().item() for n, p in ours.named_parameters()) > 1e-6


def run_steps(device, precision='fp32', channels_last=False, use_graph=False, epochs=2, n=70, batch_size=16):
    """Train the paper's small-image ResNet-18 on fixed random batches; return its state and the loss sums."""
    torch.manual_seed(0)
    network = construct_network('resnet18', 10, 'fake', 0.1, 'bn').to(device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    optimizer = optimizer_for(network)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=1e-8)
    step = TrainStep(network, optimizer, nn.CrossEntropyLoss(), device, precision, channels_last, use_graph)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batches = ImageBatches(images, torch.arange(n) % 10, device)
    losses = []
    for epoch in range(epochs):
        network.train()
        step.loss_sum.zero_()
        torch.manual_seed(epoch)
        for x, y, _ in batches.shuffled(batch_size):
            step(x, y)
        losses.append(step.loss_sum.item() / batches.num_batches(batch_size))
        scheduler.step()
    return {k: v.float().cpu() for k, v in network.state_dict().items()}, losses


def test_eager_train_step_matches_a_plain_loop_and_bf16_runs_on_cpu():
    state, losses = run_steps('cpu', epochs=1, n=40)
    torch.manual_seed(0)
    network = construct_network('resnet18', 10, 'fake', 0.1, 'bn')
    optimizer = optimizer_for(network)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    total = 0.0
    torch.manual_seed(0)
    for x, y, _ in ImageBatches(images, torch.arange(40) % 10, 'cpu').shuffled(16):
        loss = nn.functional.cross_entropy(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    assert losses[0] == total / 3  # the same operations in the same order: exact
    for (name, a), b in zip(network.state_dict().items(), state.values()):
        assert torch.equal(a.float(), b), name
    bf16_state, bf16_losses = run_steps('cpu', precision='bf16', epochs=1, n=40)
    assert all(torch.isfinite(v).all() for v in bf16_state.values()) and abs(bf16_losses[0] - losses[0]) < 0.1


def test_autocast_fp32_is_a_no_op():
    with autocast('cpu', 'fp32'):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast('cpu', 'bf16'):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@requires_cuda
@pytest.mark.parametrize('precision, channels_last', [('fp32', False), ('bf16', True), ('fp16', True)])
def test_cuda_graph_matches_eager_step_by_step(precision, channels_last):
    """The paper's ResNet-18 trained by an eager TrainStep and by one replaying its captured CUDA graph, from
    synchronised states at every step (warm-up, capture, replays, and the last, smaller batch trained eagerly):
    the same losses (the same kernels on the same inputs: cuDNN deterministic), and each update the same up to
    how it is added (assert_one_update_apart). Over 2 epochs of 70 images: 4 batches of 16, then 6."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    steps, networks, optimizers, schedulers = [], [], [], []
    for use_graph in (False, True):
        torch.manual_seed(0)
        network = construct_network('resnet18', 10, 'fake', 0.1, 'bn').cuda()
        network = network.to(memory_format=torch.channels_last) if channels_last else network
        optimizer = optimizer_for(network)
        networks.append(network), optimizers.append(optimizer)
        schedulers.append(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2, eta_min=1e-8))
        steps.append(TrainStep(network, optimizer, nn.CrossEntropyLoss(), 'cuda', precision, channels_last,
                               use_graph, max_steps=5))
    images = torch.randint(0, 256, (70, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batches = ImageBatches(images, torch.arange(70) % 10, 'cuda')
    for epoch in range(2):
        for step in steps:
            step.begin_epoch()
        for x, y, _ in batches.shuffled(16):
            sync(networks[0], networks[1], optimizers[0], optimizers[1])
            if precision == 'fp16':
                steps[1].scaler.load_state_dict(steps[0].scaler.state_dict())
            before = {k: v.clone() for k, v in networks[0].state_dict().items()}
            for network, step in zip(networks, steps):
                network.train()
                step(x, y)
            torch.cuda.synchronize()
            assert_one_update_apart(networks[0], networks[1], optimizers[0], optimizers[1], before)
        assert torch.equal(steps[0].step_losses, steps[1].step_losses), epoch
        assert torch.isfinite(steps[0].step_losses).all() and steps[1].graph is not None
        for scheduler in schedulers:
            scheduler.step()
