"""Data-parallel training under torchrun: shards, exact sharded evaluation, rank-0 files, refusals."""
import json
import subprocess
import sys

import pytest
import torch

import train
from conftest import ROOT, parse_args
from revisiting_bn.data import ImageBatches
from revisiting_bn.distributed import Distributed
from revisiting_bn.engine import evaluate_network
from revisiting_bn.cli import RunError
from revisiting_bn.networks import construct_network


def test_shards_split_every_batch_without_overlap_and_drop_a_too_small_last_batch():
    images = torch.zeros(21, 3, 2, 2, dtype=torch.uint8)
    batches = ImageBatches(images, torch.arange(21), 'cpu')
    seen, sizes = [], []
    for rank in range(4):
        world = Distributed(rank, 4)
        torch.manual_seed(0)
        shards = list(batches.shuffled(8, shard=world.shard, min_batch=4))
        sizes.append([(len(y), whole) for _, y, whole in shards])
        seen += [y.tolist() for _, y, _ in shards]
    assert sizes[0] == [(2, 8), (2, 8), (2, 5)] and sizes[3] == [(2, 8), (2, 8), (1, 5)]  # 21 = 8 + 8 + 5
    dropped = list(batches.shuffled(8, shard=Distributed(0, 6).shard, min_batch=6))
    assert [whole for _, _, whole in dropped] == [8, 8]  # 5 images cannot be split over 6 processes
    assert batches.num_batches(8, min_batch=4) == 3 and batches.num_batches(8, min_batch=6) == 2


def test_shards_cover_each_image_once():
    images = torch.zeros(21, 3, 2, 2, dtype=torch.uint8)
    batches = ImageBatches(images, torch.arange(21), 'cpu')
    labels = []
    for rank in range(3):
        world = Distributed(rank, 3)
        torch.manual_seed(0)  # every process draws the same order from its own, identically seeded generator
        for _, y, whole in batches.shuffled(9, shard=world.shard, min_batch=3):
            labels += y.tolist()
    assert sorted(labels) == list(range(21))
    evaluated = [y.tolist() for rank in range(3)
                 for _, y in batches.in_order(4, shard=Distributed(rank, 3).shard)]
    assert sorted(sum(evaluated, [])) == list(range(21))


def test_batch_must_divide_and_sync_bn_needs_cuda(capsys):
    """The checks train.py makes before a torchrun job trains (its world given here, as torchrun would)."""
    with pytest.raises(RunError, match='--batch_size 63 .* divisible by the 2 torchrun processes') as error:
        train.check_distributed(parse_args(['--batch_size', '63', '--device', 'cpu']), Distributed(0, 2))
    assert error.value.status == 2
    train.check_distributed(parse_args(['--batch_size', '64', '--device', 'cpu']), Distributed(1, 2))
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exit_info:
            train.run(['--dataset', 'fake', '--fake_size', '200', '--device', 'cpu', '--sync_bn'])
        assert exit_info.value.code == 2 and '--sync_bn needs CUDA' in capsys.readouterr().err


def torchrun(tmp_path, *extra, processes=2):
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={processes}',
                           '--standalone', 'train.py', '--dataset', 'fake', '--fake_size', '200', '--network', 'mlp',
                           '--batch_size', '64', '--num_epochs', '2', '--device', 'cpu', '--path', str(tmp_path),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_torchrun_two_processes_gloo_exact_evaluation_rank0_files(tmp_path):
    completed = torchrun(tmp_path, '--name', 'ddp')
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.count('epoch   1/2') == 1 and 'x 2 processes' in completed.stdout
    record = json.loads((tmp_path / 'fake/results/ddp.json').read_text())
    assert record['world_size'] == 2 and record['status'] == 'finished'
    # Accuracy and loss from the two shards equal a single process's evaluation of the saved weights.
    network = construct_network('mlp', 10, 'fake', 0.1, 'bn')
    network.load_state_dict(torch.load(tmp_path / 'fake/networks/ddp-best.pt', weights_only=True))
    data = train.prepare_data(parse_args(['--dataset', 'fake', '--fake_size', '200', '--device', 'cpu']), '',
                              torch.device('cpu'))
    best = record['epochs'][record['best_epoch'] - 1]
    for part in ('val', 'test'):
        assert evaluate_network(network, getattr(data, part), 64)['accuracy'] == best[f'{part}_accuracy']  # exact
    # The shards' batches differ from one process's, so each float32 batch sum (<= 64 terms) rounds differently:
    # at most 64 x 2^-24 = 4e-6 relative. A wrong shard (a missing or doubled image) is off by ~1 / 20 = 5%.
    assert evaluate_network(network, data.val, 64)['loss'] == pytest.approx(best['val_loss'], rel=1e-5)
    sorted_files = sorted(p.name for p in (tmp_path / 'fake').rglob('*') if p.is_file())
    assert sorted_files == ['ddp-best.pt', 'ddp-last.pt', 'ddp.csv', 'ddp.json', 'ddp.norm_statistics.csv', 'ddp.txt']


def test_torchrun_batch_must_divide(tmp_path):
    completed = torchrun(tmp_path, '--batch_size', '63')
    assert completed.returncode != 0
    assert 'train.py: error: --batch_size 63 (the global batch) must be divisible by the 2 torchrun processes' \
        in completed.stderr
    assert 'train.py", line' not in completed.stderr  # torchrun reports the failed workers; train.py raised nothing
