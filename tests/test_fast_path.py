
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


@pytest.mark.parametrize('momentum', [0.9, 0.0])
def test_sgd_step_with_tensor_lrs_matches_torch_sgd(momentum):
    reference, ours = small_network(), small_network()
    opt_ref, opt_ours = optimizer_for(reference, momentum), optimizer_for(ours, momentum)
    sched_ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ref, T_max=4, eta_min=1e-8)
    sched_ours = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ours, T_max=4, eta_min=1e-8)
    negative_lrs = [torch.zeros(()) for _ in opt_ours.param_groups]
    torch.manual_seed(1)
    for epoch in range(3):
        for step in range(3):
            x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
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
        sched_ref.step(), sched_ours.step()
        for (name, a), b in zip(reference.state_dict().items(), ours.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-7), (epoch, name)
        assert [g['lr'] for g in opt_ref.param_groups] == [g['lr'] for g in opt_ours.param_groups]
    start = dict(small_network().named_parameters())
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
    """Same batches through TrainStep's fp16 path and through torch.amp.GradScaler + torch.optim.SGD:
    overflowing steps are skipped, the scale backs off and grows by GradScaler's rule, and the weights,
    momentum buffers and scale agree step by step."""
    reference, ours = small_network(), small_network()
    opt_ref, opt_ours = optimizer_for(reference), optimizer_for(ours)
    sched_ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ref, T_max=4, eta_min=1e-8)
    sched_ours = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ours, T_max=4, eta_min=1e-8)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 10, growth_interval=3)
    criterion_ref, overflow_calls = OverflowAt([1, 5, 6]), [1, 5, 6]  # the very first step too: no momentum yet
    step = TrainStep(ours, opt_ours, OverflowAt(overflow_calls), 'cpu', 'fp16', max_steps=4)
    step.scaler = LossScaler('cpu', init_scale=2.0 ** 10, growth_interval=3)
    torch.manual_seed(1)
    scales = []
    for epoch in range(3):
        step.begin_epoch()
        for _ in range(4):
            x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
            opt_ref.zero_grad()
            with torch.autocast('cpu', dtype=torch.float16):
                loss = criterion_ref(reference(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt_ref)
            scaler.update()
            step(x, y)
            assert step.scaler.scale.item() == scaler.get_scale()
            scales.append(scaler.get_scale())
            for (name, a), b in zip(reference.state_dict().items(), ours.state_dict().values()):
                assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-7), (epoch, name)
            for p_ref, p_ours in zip(reference.parameters(), ours.parameters()):
                buffer = opt_ref.state[p_ref].get('momentum_buffer')
                expected = torch.zeros_like(p_ref) if buffer is None else buffer
                assert torch.allclose(expected, opt_ours.state[p_ours]['momentum_buffer'], rtol=1e-5, atol=1e-7)
        sched_ref.step(), sched_ours.step()
    assert scales[0] == 2.0 ** 9 and any(b > a for a, b in zip(scales, scales[1:]))  # backed off, then grew
    state = step.scaler.state_dict()
    assert state['scale'] == scaler.state_dict()['scale'] and state['_growth_tracker'] == scaler.state_dict()[
        '_growth_tracker']
    restored = LossScaler('cpu')
    restored.load_state_dict(scaler.state_dict())  # GradScaler's format, as older checkpoints hold
    assert restored.scale.item() == scaler.get_scale() and restored.growth_interval == 3
    start = dict(small_network().named_parameters())
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
        for x, y, _ in batches.shuffled(batch_size, torch.Generator().manual_seed(epoch)):
            step(x, y)
        losses.append(step.loss_sum.item() / n)
        scheduler.step()
    return {k: v.float().cpu() for k, v in network.state_dict().items()}, losses


def test_eager_train_step_matches_a_plain_loop_and_bf16_runs_on_cpu():
    state, losses = run_steps('cpu', epochs=1, n=40)
    torch.manual_seed(0)
    network = construct_network('resnet18', 10, 'fake', 0.1, 'bn')
    optimizer = optimizer_for(network)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    total = 0.0
    for x, y, _ in ImageBatches(images, torch.arange(40) % 10, 'cpu').shuffled(16, torch.Generator().manual_seed(0)):
        loss = nn.functional.cross_entropy(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
    assert losses[0] == pytest.approx(total / 40, rel=1e-6)
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
def test_cuda_graph_matches_eager_step_by_step_in_fp32():
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    eager_state, eager_losses = run_steps('cuda', use_graph=False, epochs=3)
    graph_state, graph_losses = run_steps('cuda', use_graph=True, epochs=3)  # 70 = 4 x 16 + a last batch of 6
    assert graph_losses == pytest.approx(eager_losses, rel=1e-4)
    for name in eager_state:
        assert torch.allclose(eager_state[name], graph_state[name], rtol=1e-3, atol=1e-5), name


@requires_cuda
@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_mixed_precision_on_cuda_trains(precision):
    state, losses = run_steps('cuda', precision=precision, channels_last=True, use_graph=True)
    assert all(torch.isfinite(v).all() for v in state.values()) and all(l < 5 for l in losses)  # noqa: E741


@requires_cuda
def test_cuda_graph_matches_eager_in_fp16_with_loss_scaling():
    eager_state, eager_losses = run_steps('cuda', precision='fp16', use_graph=False, epochs=3)
    graph_state, graph_losses = run_steps('cuda', precision='fp16', use_graph=True, epochs=3)
    assert graph_losses == pytest.approx(eager_losses, rel=1e-2)
    for name in eager_state:
        assert torch.allclose(eager_state[name], graph_state[name], rtol=2e-2, atol=1e-3), name
