"""The CUDA graph's arithmetic, on the CPU: sgd_step against torch.optim.SGD, LossScaler against GradScaler."""
import pytest
import torch
import torch.nn as nn

from conftest import assert_one_update_apart, optimizer_for, small_network, sync
from engine import TrainStep
from fast_path import LossScaler, autocast, sgd_step


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


def test_autocast_fp32_is_a_no_op():
    with autocast('cpu', 'fp32'):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast('cpu', 'bf16'):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
