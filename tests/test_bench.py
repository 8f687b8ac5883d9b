"""bench.py: each pipeline really trains the given steps on the chosen network, and bad flags are refused."""
import json

import pytest
import torch

import bench


def test_bench_trains_each_pipeline_for_the_given_steps(tmp_path, capsys, monkeypatch):
    steps = []
    step_once = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, 'step', lambda self, *a, **k: steps.append(1) or step_once(self, *a, **k))
    out = tmp_path / 'bench.json'
    results = bench.main(['--device', 'cpu', '--network', 'mlp', '--batch_size', '16', '--train_size', '48',
                          '--steps', '2', '--min_time', '0', '--warmup', '1', '--json', str(out)])
    assert len(steps) == 3 * (1 + 2)  # warm-up and timed steps, in each of the three pipelines
    printed = capsys.readouterr().out
    assert 'mlp       usual' in printed and 'mlp       bare' in printed and '% of the bare loop' in printed
    saved = json.loads(out.read_text())
    assert saved['mlp']['fast']['images_per_s'] == results['mlp']['fast']['images_per_s'] > 0
    assert saved['mlp']['fast']['steps'] == 2 and saved['config']['shape'] == 'mnist'


@pytest.mark.parametrize('argv, message', [
    (['--device', 'cpu', '--precision', 'fp16'], 'fp16 needs a CUDA device'),
    (['--device', 'cpu', '--steps', '0'], 'must be positive'),
    (['--device', 'cpu', '--train_size', '8', '--batch_size', '16'], 'at least --batch_size'),
    (['--device', 'cpu', '--network', 'vgg'], "invalid choice: 'vgg'"),
])
def test_bench_rejects_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
