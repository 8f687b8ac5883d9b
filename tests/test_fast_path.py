"""The layer for GPUs: sgd_step against torch.optim.SGD and LossScaler against GradScaler (on the CPU), the CUDA
graph's self-check (simulated on the CPU), and the graph against eager steps (on a GPU, where there is one)."""
import pytest
import torch
import torch.nn as nn

from revisiting_bn import fast_path
from conftest import assert_one_update_apart, optimizer_for, small_network, sync
from revisiting_bn.data import ImageBatches
from revisiting_bn.engine import Epoch, Step, autocast
from revisiting_bn.fast_path import GraphStep, LossScaler, build_step, sgd_step
from revisiting_bn.networks import construct_network

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


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
    nesterov = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match='nesterov'):
        GraphStep(Step(network, nesterov, nn.CrossEntropyLoss()), 'cpu')
    with pytest.raises(ValueError, match='nesterov'):
        build_step(network, nesterov, nn.CrossEntropyLoss(), 'cpu', 'fp16')


def test_graph_needs_cuda():
    network = small_network()
    with pytest.raises(ValueError, match='CUDA graphs need a CUDA device'):
        build_step(network, optimizer_for(network), nn.CrossEntropyLoss(), 'cpu', use_graph=True)


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
    """Same batches through the fp16 step (ScaledStep) and through torch.amp.GradScaler + torch.optim.SGD, from
    synchronised states at every step: overflowing steps are skipped (weights and momentum left exactly as they
    were), the scale backs off and grows by GradScaler's rule (exactly), and each step's update agrees up to
    the rounding of how it is added (assert_one_update_apart)."""
    reference, ours = small_network(), small_network()
    opt_ref, opt_ours = optimizer_for(reference), optimizer_for(ours)
    sched_ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ref, T_max=4, eta_min=1e-8)
    sched_ours = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ours, T_max=4, eta_min=1e-8)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 10, growth_interval=3)
    criterion_ref, overflow_calls = OverflowAt([1, 5, 6]), [1, 5, 6]  # the very first step too: no momentum yet
    step = build_step(ours, opt_ours, OverflowAt(overflow_calls), 'cpu', 'fp16')
    step.scaler = LossScaler('cpu', init_scale=2.0 ** 10, growth_interval=3)
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    torch.manual_seed(1)
    scales, skipped = [], 0
    for epoch in range(3):
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


def test_autocast_fp32_is_a_no_op():
    with autocast('cpu', 'fp32'):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast('cpu', 'bf16'):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@requires_cuda
@pytest.mark.parametrize('precision, channels_last', [('fp32', False), ('bf16', True), ('fp16', True)])
def test_cuda_graph_matches_eager_step_by_step(precision, channels_last):
    """The paper's ResNet-18 trained by an eager step and by one replaying its captured CUDA graph, from
    synchronised states at every step (warm-up, capture, replays, and the last, smaller batch trained eagerly):
    the same losses (the same kernels on the same inputs: cuDNN deterministic), and each update the same up to
    how it is added (assert_one_update_apart). Over 2 epochs of 70 images: 4 batches of 16, then 6."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    steps, epochs, networks, optimizers, schedulers = [], [], [], [], []
    for use_graph in (False, True):
        torch.manual_seed(0)
        network = construct_network('resnet18', 10, 'fake', 0.1, 'bn').cuda()
        network = network.to(memory_format=torch.channels_last) if channels_last else network
        optimizer = optimizer_for(network)
        networks.append(network), optimizers.append(optimizer), epochs.append(Epoch(5, 'cuda'))
        schedulers.append(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2, eta_min=1e-8))
        steps.append(build_step(network, optimizer, nn.CrossEntropyLoss(), 'cuda', precision, channels_last,
                                use_graph))
    images = torch.randint(0, 256, (70, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batches = ImageBatches(images, torch.arange(70) % 10, 'cuda')
    for _ in range(2):
        for epoch in epochs:
            epoch.begin()
        for x, y, _ in batches.shuffled(16):
            sync(networks[0], networks[1], optimizers[0], optimizers[1])
            if precision == 'fp16':
                steps[1].scaler.load_state_dict(steps[0].scaler.state_dict())
            before = {k: v.clone() for k, v in networks[0].state_dict().items()}
            for network, step, epoch in zip(networks, steps, epochs):
                network.train()
                epoch.record(step(x, y))
            torch.cuda.synchronize()
            assert_one_update_apart(networks[0], networks[1], optimizers[0], optimizers[1], before)
        assert torch.equal(epochs[0].step_losses, epochs[1].step_losses)
        assert torch.isfinite(epochs[0].step_losses).all() and steps[1].graph is not None
        assert steps[1].execution['step'] == 'CUDA graph' and steps[1].execution['check_deviation'] <= 2
        for scheduler in schedulers:
            scheduler.step()


def graph_on_the_cpu(monkeypatch, replay, capture=None):
    """A GraphStep whose 'CUDA graph' is played by functions (the check must not need a GPU), after the three
    warm-up steps; and a plain eager Step beside it, from the same weights, as the reference. Returns both steps
    and their epochs' losses."""
    networks = [small_network(), small_network()]
    graph = GraphStep(Step(networks[0], optimizer_for(networks[0]), nn.CrossEntropyLoss()), 'cpu')
    eager = Step(networks[1], optimizer_for(networks[1]), nn.CrossEntropyLoss())

    def fake_capture(self, images, labels):
        self.graph, self.graph_batch_size = 'captured', labels.shape[0]

    monkeypatch.setattr(GraphStep, '_capture', capture or fake_capture)
    monkeypatch.setattr(GraphStep, '_replay', replay)
    monkeypatch.setattr(GraphStep, '_warm_up', lambda self, x, y: self._eager(x, y))
    torch.manual_seed(1)
    batches = [(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))) for _ in range(6)]
    epochs = [Epoch(len(batches), 'cpu'), Epoch(len(batches), 'cpu')]
    for step, epoch in zip((graph, eager), epochs):
        epoch.begin()
        for x, y in batches:
            epoch.record(step(x, y))
    return graph, eager, epochs


def faithful_replay(self, images, labels, lr_factor=1.0):
    """What the captured graph does: forward, backward, sgd_step with the device-held learning rates."""
    self.lrs.refresh()
    self.eager.optimizer.zero_grad(set_to_none=True)
    loss = self.eager.forward_backward(images, labels)
    for tensor in self.lrs.negative:
        tensor.mul_(lr_factor)
    self._update_on_device()
    for tensor in self.lrs.negative:
        tensor.div_(lr_factor)
    return loss


def test_a_graph_whose_first_step_matches_eager_is_kept(monkeypatch):
    replays = []
    graph, eager, epochs = graph_on_the_cpu(monkeypatch,
                                            lambda self, x, y: replays.append(1) or faithful_replay(self, x, y))
    assert graph.execution['step'] == 'CUDA graph'
    assert graph.execution['check_deviation'] <= fast_path.GRAPH_CHECK_TOLERANCE
    assert len(replays) == 1 + 2 and graph.use_graph  # the checked first replay, then two more steps
    assert epochs[0].mean_loss() == pytest.approx(epochs[1].mean_loss(), rel=1e-6)  # fp32 rounding of the updates


@pytest.mark.parametrize('problem', ['wrong', 'error'])
def test_a_graph_that_differs_or_fails_is_dropped_for_the_eager_result(monkeypatch, capsys, problem):
    """A replay with a 0.1% wrong learning rate, or a capture that raises: one warning line, the step's eager
    result kept (bit for bit), every later step eager, and the reason and deviation in the step's execution."""
    def broken_capture(self, images, labels):
        raise RuntimeError('CUDA error: operation not permitted\nwhen stream is capturing')

    replay = lambda self, x, y: faithful_replay(self, x, y, lr_factor=1.001)  # noqa: E731
    graph, eager, epochs = graph_on_the_cpu(monkeypatch, replay, broken_capture if problem == 'error' else None)
    assert not graph.use_graph and graph.execution['step'] == 'eager'
    assert all(torch.equal(a, b) for a, b in zip(graph.network.state_dict().values(),
                                                 eager.network.state_dict().values()))
    assert epochs[0].mean_loss() == epochs[1].mean_loss()
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith('warning: the CUDA graph was dropped')
    if problem == 'wrong':
        assert graph.execution['check_deviation'] > 1000 and 'differs from the eager step' in graph.execution['why']
    else:
        assert graph.execution['check_deviation'] is None
        assert 'RuntimeError: CUDA error: operation not permitted when stream is capturing' in graph.execution['why']
