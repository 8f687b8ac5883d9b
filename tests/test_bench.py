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
    (['--device', 'cpu', '--threads', '0'], '--threads and --jobs must be >= 1'),
    (['--device', 'cpu', '--sharing', '--jobs', '0'], '--threads and --jobs must be >= 1'),
])
def test_bench_rejects_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_sharing_jobs_time_the_same_seconds_and_add_up(tmp_path):
    args, _ = bench.parse(['--device', 'cpu', '--network', 'mlp', '--batch_size', '16', '--train_size', '48',
                           '--steps', '2', '--min_time', '0', '--warmup', '1'])
    assert bench.jobs_at_once(args, 'mlp', 2, 1) > 0


def test_sharing_compares_one_thread_all_threads_and_one_job_per_core(monkeypatch, capsys):
    monkeypatch.setattr(bench, 'usable_cores', lambda: 4)
    rates = {(1, 1): 100.0, (1, 4): 180.0, (4, 1): 350.0}
    monkeypatch.setattr(bench, 'jobs_at_once', lambda args, network, jobs, threads: rates[jobs, threads])
    results = bench.main(['--device', 'cpu', '--network', 'mlp', '--batch_size', '16', '--train_size', '48',
                          '--steps', '1', '--min_time', '0', '--warmup', '0', '--pipelines', 'fast', '--sharing',
                          '--jobs', '4'])
    assert results['mlp']['sharing'] == {'1 job x 1 thread': 100.0, '1 job x 4 threads': 180.0,
                                         '4 jobs x 1 thread': 350.0}
    out = capsys.readouterr().out
    assert '4 jobs x 1 thread' in out and '(3.50x one thread)' in out
    assert 'most images/s on this CPU: 4 jobs x 1 thread' in out
