"""The training engine: the step (against a plain loop, mixed precision), the epoch's mid-epoch state, the
progress display and evaluation's arithmetic."""
import io
import math
import sys

import pytest
import torch
import torch.nn as nn

from revisiting_bn import engine
from revisiting_bn.checkpoint import cpu_copy
from conftest import optimizer_for, small_network
from revisiting_bn.data import ImageBatches
from revisiting_bn.engine import Epoch, Step, evaluate_network, train_one_epoch


def tiny_batches(n=40, device='cpu'):
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return ImageBatches(images, torch.arange(n) % 4, device)


def test_eager_step_is_a_plain_training_loop():
    """Step on the CPU runs exactly what the original's loop runs: same weights, same loss sum."""
    network, reference = small_network(), small_network()
    step, epoch = Step(network, optimizer_for(network), nn.CrossEntropyLoss()), Epoch(3, 'cpu')
    torch.manual_seed(0)
    assert train_one_epoch(step, epoch, tiny_batches(), 16) == 3  # 40 = 16 + 16 + 8
    optimizer, total = optimizer_for(reference), 0.0
    torch.manual_seed(0)
    for x, y, _ in tiny_batches().shuffled(16):
        loss = nn.functional.cross_entropy(reference(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    assert epoch.mean_loss() == total / 3  # the same operations in the same order: exact
    for (name, a), b in zip(reference.state_dict().items(), network.state_dict().values()):
        assert torch.equal(a, b), name


def test_bf16_channels_last_step_is_autocast_in_that_layout():
    """A bf16 channels-last step is exactly the hand-written autocast step on channels-last inputs (so both
    settings really apply), and its arithmetic differs from fp32's."""
    x, y = next(iter(tiny_batches().shuffled(16)))[:2]
    losses = {}
    for precision, channels_last in (('fp32', False), ('bf16', True)):
        network = small_network().to(memory_format=torch.channels_last) if channels_last else small_network()
        step = Step(network, optimizer_for(network), nn.CrossEntropyLoss(), precision, channels_last)
        losses[precision] = step(x, y).item()
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


def test_a_step_restored_mid_epoch_continues_the_same_epoch(monkeypatch):
    """An epoch's position lives in Epoch's state: restored after 2 of 3 steps, the epoch's order is drawn
    again from the same generator state and training goes on with step 3, ending where an unbroken epoch ends."""
    whole, broken = small_network(), small_network()
    steps = [Step(net, optimizer_for(net), nn.CrossEntropyLoss()) for net in (whole, broken)]
    epochs = [Epoch(3, 'cpu'), Epoch(3, 'cpu')]
    torch.manual_seed(5)
    train_one_epoch(steps[0], epochs[0], tiny_batches(), 16)
    after_whole = torch.get_rng_state()

    class Stop:  # as StopOnSignal after a SIGTERM during step 2
        received = None

    record_once = Epoch.record

    def record_then_signal(self, loss):
        record_once(self, loss)
        Stop.received = 15 if self.steps_done == 2 else None

    torch.manual_seed(5)
    with monkeypatch.context() as patch:
        patch.setattr(Epoch, 'record', record_then_signal)
        assert train_one_epoch(steps[1], epochs[1], tiny_batches(), 16, stop=Stop) == 2
    saved = cpu_copy(epochs[1].state_dict())
    assert saved['in_epoch'] and saved['steps_done'] == 2
    torch.manual_seed(99)  # whatever happened since: the restored epoch sets the generator back
    restored = Epoch(3, 'cpu')
    restored.load_state_dict(saved)
    assert train_one_epoch(steps[1], restored, tiny_batches(), 16) == 3 and not restored.in_epoch
    assert torch.equal(torch.get_rng_state(), after_whole)
    assert restored.mean_loss() == epochs[0].mean_loss()
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
    result = evaluate_network(ConstantClass(), batches, 2)
    assert result['accuracy'] == 1 / 3 * 100.0 == 33.33333333333333 != 100.0 * 1 / 3
    one = torch.nn.functional.cross_entropy(torch.zeros(1, 10), torch.tensor([0]), reduction='sum').item()
    assert result['loss'] == (2 * one + one) / 3 and one == pytest.approx(math.log(10))


def test_a_nonfinite_loss_is_traced_to_its_step():
    epoch = Epoch(3, 'cpu')
    epoch.begin()
    for loss in (1.0, float('nan'), 2.0):
        epoch.record(torch.tensor(loss))
    assert epoch.first_nonfinite_step() == 1 and epoch.steps_done == 3
