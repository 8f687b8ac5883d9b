"""The training engine: the step (eager against a plain loop, mixed precision, CUDA graph against eager), its
mid-epoch state, the progress display and evaluation's arithmetic."""
import io
import math
import sys

import pytest
import torch
import torch.nn as nn

import engine
from checkpoint import cpu_copy
from conftest import assert_one_update_apart, optimizer_for, small_network, sync
from data import ImageBatches
from engine import TrainStep, evaluate, train_one_epoch
from networks import construct_network

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def tiny_batches(n=40, device='cpu'):
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return ImageBatches(images, torch.arange(n) % 4, device)


def test_eager_step_is_a_plain_training_loop():
    """TrainStep on the CPU runs exactly what the original's loop runs: same weights, same loss sum."""
    network, reference = small_network(), small_network()
    step = TrainStep(network, optimizer_for(network), nn.CrossEntropyLoss(), 'cpu', max_steps=3)
    torch.manual_seed(0)
    assert train_one_epoch(step, tiny_batches(), 16) == 3  # 40 = 16 + 16 + 8
    optimizer, total = optimizer_for(reference), 0.0
    torch.manual_seed(0)
    for x, y, _ in tiny_batches().shuffled(16):
        loss = nn.functional.cross_entropy(reference(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    assert step.mean_loss() == total / 3  # the same operations in the same order: exact
    for (name, a), b in zip(reference.state_dict().items(), network.state_dict().values()):
        assert torch.equal(a, b), name


def test_bf16_channels_last_step_is_autocast_in_that_layout():
    """A bf16 channels-last step is exactly the hand-written autocast step on channels-last inputs (so both
    settings really apply), and its arithmetic differs from fp32's."""
    x, y = next(iter(tiny_batches().shuffled(16)))[:2]
    losses = {}
    for precision, channels_last in (('fp32', False), ('bf16', True)):
        network = small_network().to(memory_format=torch.channels_last) if channels_last else small_network()
        step = TrainStep(network, optimizer_for(network), nn.CrossEntropyLoss(), 'cpu', precision, channels_last)
        step.begin_epoch()
        step(x, y)
        losses[precision] = step.loss_sum.item()
    reference = small_network().to(memory_format=torch.channels_last)
    optimizer = optimizer_for(reference)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(reference(x.contiguous(memory_format=torch.channels_last)), y)
    loss.backward()
    optimizer.step()
    assert losses['bf16'] == loss.item() != losses['fp32']
    for (name, a), b in zip(reference.state_dict().items(), network.state_dict().values()):
        assert torch.equal(a, b) and b.dtype == a.dtype, name
    assert network[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.dtype == torch.float32 for p in network.parameters())  # autocast keeps the weights fp32


def test_graph_needs_cuda():
    network = small_network()
    with pytest.raises(ValueError, match='CUDA graphs need a CUDA device'):
        TrainStep(network, optimizer_for(network), nn.CrossEntropyLoss(), 'cpu', use_graph=True)


def test_a_step_restored_mid_epoch_continues_the_same_epoch(monkeypatch):
    """An epoch's position lives in TrainStep's state: restored after 2 of 3 steps, the epoch's order is drawn
    again from the same generator state and training goes on with step 3, ending where an unbroken epoch ends."""
    whole, broken = small_network(), small_network()
    steps = [TrainStep(net, optimizer_for(net), nn.CrossEntropyLoss(), 'cpu', max_steps=3) for net in (whole, broken)]
    torch.manual_seed(5)
    train_one_epoch(steps[0], tiny_batches(), 16)
    after_whole = torch.get_rng_state()

    class Stop:  # as StopOnSignal after a SIGTERM during step 2
        received = None

    step_once = TrainStep.__call__

    def step_then_signal(self, *args, **kwargs):
        step_once(self, *args, **kwargs)
        Stop.received = 15 if self.steps_done == 2 else None

    torch.manual_seed(5)
    with monkeypatch.context() as patch:
        patch.setattr(TrainStep, '__call__', step_then_signal)
        assert train_one_epoch(steps[1], tiny_batches(), 16, stop=Stop) == 2
    saved = cpu_copy(steps[1].state_dict())
    assert saved['in_epoch'] and saved['steps_done'] == 2
    torch.manual_seed(99)  # whatever happened since: the restored epoch sets the generator back
    restored = TrainStep(broken, steps[1].optimizer, nn.CrossEntropyLoss(), 'cpu', max_steps=3)
    restored.load_state_dict(saved)
    assert train_one_epoch(restored, tiny_batches(), 16) == 3 and not restored.in_epoch
    assert torch.equal(torch.get_rng_state(), after_whole)
    assert restored.mean_loss() == steps[0].mean_loss()
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), broken.state_dict().values()))


def shown(monkeypatch, tty, total, initial, label):
    """What engine.progress prints for ``total - initial`` steps, with stdout a terminal or a log file."""
    out = io.StringIO()
    out.isatty = lambda: tty
    monkeypatch.setattr(sys, 'stdout', out)
    with engine.progress(total, initial, label) as bar:
        for _ in range(total - initial):
            bar.update()
    return out.getvalue()


def test_progress_is_a_bar_on_a_terminal_and_sparse_lines_in_a_log(monkeypatch):
    bar = shown(monkeypatch, True, 200, 0, 'epoch 1/2')
    assert '\r' in bar and 'epoch 1/2' in bar and '\n' not in bar
    assert shown(monkeypatch, False, 200, 0, 'epoch 1/2') == ''  # an epoch under 30 s leaves no line in a log
    monkeypatch.setattr(engine, 'LOG_INTERVAL_S', 0)
    lines = shown(monkeypatch, False, 5, 2, 'epoch 3/9').splitlines()  # every 0 s: whole lines, rate, time left
    assert [line.split(' [')[0] for line in lines] == [f'epoch 3/9: {n}/5 steps' for n in (2, 3, 4, 5)]
    assert all('<' in line and 'step' in line.split(', ')[-1] for line in lines)


class ConstantClass(torch.nn.Module):
    """Predicts class 0 for every image, with a loss of ln(10) per image."""

    def forward(self, images):
        return torch.zeros(images.shape[0], 10)


def test_evaluation_arithmetic_is_the_originals():
    """Accuracy is (correct / n) x 100 (sklearn's accuracy_score, then x 100), not 100 x correct / n: for 1 of 3
    they differ in the last bit. The loss is the float64 sum of per-batch summed losses, divided by n."""
    batches = ImageBatches(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2]), 'cpu')
    result = evaluate(ConstantClass(), batches, 2)
    assert result['accuracy'] == 1 / 3 * 100.0 == 33.33333333333333 != 100.0 * 1 / 3
    one = torch.nn.functional.cross_entropy(torch.zeros(1, 10), torch.tensor([0]), reduction='sum').item()
    assert result['loss'] == (2 * one + one) / 3 and one == pytest.approx(math.log(10))


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
        assert steps[1].path['step'] == 'CUDA graph' and steps[1].path['check_deviation'] <= 2
        for scheduler in schedulers:
            scheduler.step()


def graph_on_the_cpu(monkeypatch, replay, capture=None):
    """A TrainStep whose 'CUDA graph' is played by functions (the check must not need a GPU), after the three
    warm-up steps; and a plain eager TrainStep beside it, from the same weights, as the reference."""
    steps = []
    for use_graph in (True, False):
        network = small_network()
        steps.append(TrainStep(network, optimizer_for(network), nn.CrossEntropyLoss(), 'cpu', max_steps=8))
    graph_step = steps[0]

    def fake_capture(self, images, labels):
        self.graph, self.graph_batch_size = 'captured', labels.shape[0]
        self.step_index.fill_(self.steps_done)

    monkeypatch.setattr(TrainStep, '_capture', capture or fake_capture)
    monkeypatch.setattr(TrainStep, '_replay', replay)
    monkeypatch.setattr(TrainStep, '_warm_up', lambda self, x, y: self._eager(x, y))
    graph_step.use_graph = True
    torch.manual_seed(1)
    batches = [(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))) for _ in range(6)]
    for step in steps:
        step.begin_epoch()
        for x, y in batches:
            step(x, y)
    return steps


def faithful_replay(self, images, labels, lr_factor=1.0):
    """What the captured graph does: forward, backward, sgd_step with the device-held learning rates."""
    self._refresh_lrs()
    self.optimizer.zero_grad(set_to_none=True)
    loss = self._forward_backward(images, labels)
    for tensor in self.negative_lrs:
        tensor.mul_(lr_factor)
    self._update()
    for tensor in self.negative_lrs:
        tensor.div_(lr_factor)
    self._record(loss, captured=True)


def test_a_graph_whose_first_step_matches_eager_is_kept(monkeypatch):
    replays = []
    graph, eager = graph_on_the_cpu(monkeypatch, lambda self, x, y: replays.append(1) or faithful_replay(self, x, y))
    assert graph.path['step'] == 'CUDA graph' and graph.path['check_deviation'] <= engine.GRAPH_CHECK_TOLERANCE
    assert len(replays) == 1 + 2 and graph.use_graph  # the checked first replay, then two more steps
    assert graph.mean_loss() == pytest.approx(eager.mean_loss(), rel=1e-6)  # fp32 rounding of the updates


@pytest.mark.parametrize('problem', ['wrong', 'error'])
def test_a_graph_that_differs_or_fails_is_dropped_for_the_eager_result(monkeypatch, capsys, problem):
    """A replay with a 0.1% wrong learning rate, or a capture that raises: one warning line, the step's eager
    result kept (bit for bit), every later step eager, and the reason and deviation in the step's path."""
    def broken_capture(self, images, labels):
        raise RuntimeError('CUDA error: operation not permitted\nwhen stream is capturing')

    replay = lambda self, x, y: faithful_replay(self, x, y, lr_factor=1.001)  # noqa: E731
    graph, eager = graph_on_the_cpu(monkeypatch, replay, broken_capture if problem == 'error' else None)
    assert not graph.use_graph and graph.path['step'] == 'eager'
    assert all(torch.equal(a, b) for a, b in zip(graph.network.state_dict().values(),
                                                 eager.network.state_dict().values()))
    assert graph.mean_loss() == eager.mean_loss()
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith('warning: the CUDA graph was dropped')
    if problem == 'wrong':
        assert graph.path['check_deviation'] > 1000 and 'differs from the eager step' in graph.path['why']
    else:
        assert graph.path['check_deviation'] is None
        assert 'RuntimeError: CUDA error: operation not permitted when stream is capturing' in graph.path['why']
