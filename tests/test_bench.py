import json

import pytest

import bench


def test_bench_runs_both_pipelines_on_cpu(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    results = bench.main(['--device', 'cpu', '--batch_size', '16', '--train_size', '48', '--steps', '2',
                          '--warmup', '1', '--json', str(out)])
    for key in ('usual', 'fast'):
        assert results[key]['images_per_s'] > 0 and results[key]['peak_gpu_memory_gib'] is None
        assert results[key]['projected_180_epochs_min'] == pytest.approx(
            180 * 48 / results[key]['images_per_s'] / 60)
    assert results['speedup'] == pytest.approx(results['fast']['images_per_s'] / results['usual']['images_per_s'])
    printed = capsys.readouterr().out
    assert 'usual (PIL + DataLoader' in printed and 'fast (fp32, eager)' in printed and 'fast / usual' in printed
    assert json.loads(out.read_text())['fast']['images_per_s'] == results['fast']['images_per_s']


@pytest.mark.parametrize('argv, message', [
    (['--device', 'cpu', '--precision', 'fp16'], 'fp16 needs a CUDA device'),
    (['--device', 'cpu', '--steps', '0'], 'must be positive'),
    (['--device', 'cpu', '--train_size', '8', '--batch_size', '16'], 'at least --batch_size'),
])
def test_bench_rejects_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
