"""sweep.py: the configurations x seeds plan, its refusals, running, skipping, failing and resuming runs."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import sweep
from conftest import ROOT

TINY = ['--', '--dataset', 'fake', '--fake_size', '100', '--batch_size', '32', '--network', 'mlp']


def test_dry_run_lists_every_configuration_and_seed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, 'usable_cores', lambda: 2)
    assert sweep.main(['--dry_run', '--path', str(tmp_path), '--gpus', '0'] + TINY) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 31 and lines[-1] == '30 runs, 0 finished; 2 at a time on cpu, 1 thread each'
    assert '--bn_weight 1 --c 1 --input_norm dataset --name baseline_seed1 --seed 1' in lines[0]
    assert '--bn_weight 0.1 --c 100 --input_norm bn --name proposed_seed15 --seed 15' in lines[29]
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_user_configurations_from_flags_and_file(tmp_path, capsys):
    config_file = tmp_path / 'configs.json'
    config_file.write_text(json.dumps({'half': {'bn_weight': 0.5, 'c': 100}, 'no_lr_cut': '--c 1'}))
    assert sweep.main(['--dry_run', '--seeds', '2,4-5', '--config', 'tiny=--bn_weight 0.01',
                       '--config_file', str(config_file), '--configs', 'proposed', 'tiny', 'half', '--path',
                       str(tmp_path)] + TINY) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split('--name ')[1].split()[0] for line in lines[:-1]] == [
        'proposed_seed2', 'proposed_seed4', 'proposed_seed5', 'tiny_seed2', 'tiny_seed4', 'tiny_seed5',
        'half_seed2', 'half_seed4', 'half_seed5']
    assert '--bn_weight 0.5 --c 100 --name half_seed2' in lines[6]
    assert sweep.main(['--dry_run', '--task_index', '4', '--seeds', '1-3'] + TINY) == 0
    assert capsys.readouterr().out.splitlines()[0].split('--name ')[1].startswith('proposed_seed2')


def test_runs_are_checked_for_the_device_they_will_get(tmp_path, capsys, monkeypatch):
    half = ['--dry_run', '--configs', 'half', '--config', 'half=--precision fp16', '--path', str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(half + ['--gpus', '0'] + TINY)
    assert exit_info.value.code == 2 and 'fp16 needs a CUDA device' in capsys.readouterr().err
    monkeypatch.setattr(sweep.torch.cuda, 'is_available', lambda: True)  # as on a GPU machine
    monkeypatch.setattr(sweep, 'slots', lambda args: ([('cuda', '0')], 4))
    assert sweep.main(half + TINY) == 0
    assert capsys.readouterr().out.splitlines()[-1] == '15 runs, 0 finished; 1 at a time on cuda, 4 threads each'


@pytest.mark.parametrize('argv, message', [
    (['--seeds', '1-x'], '--seeds'),
    (['--configs', 'proposd'], 'unknown configuration(s) proposd'),
    (['--config', 'noequals'], "use NAME='--flag value ...'"),
    (['--task_index', '40'], '--task_index 40: the sweep has runs 0..29'),
    (['--', '--seed', '3'], '--seed is set by the sweep'),
    (['--', '--num_epochs', '0'], 'train.py flags: --num_epochs must be >= 1'),
    (['--config', 'x=--network vgg'], "unknown network 'vgg'"),
])
def test_bad_sweep_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(['--dry_run'] + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and message in err[0]


def test_a_grid_is_crossed_into_named_configurations_on_the_proposed_flags_or_a_base(tmp_path, capsys):
    assert sweep.main(['--dry_run', '--seeds', '1', '--grid', 'bn_weight=0.05,1', '--grid', 'c=1,100', '--path',
                       str(tmp_path)] + TINY) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split('--name ')[1].split()[0] for line in lines[:-1]] == [
        'baseline_seed1', 'bn_weight0.05_c1_seed1', 'bn_weight0.05_c100_seed1', 'bn_weight1_c1_seed1',
        'bn_weight1_c100_seed1']
    assert '--bn_weight 0.1 --c 100 --input_norm bn --bn_weight 0.05 --c 1 --name bn_weight0.05_c1_seed1' in lines[1]
    assert sweep.main(['--dry_run', '--seeds', '1', '--grid', 'c=1,10', '--grid_base', '--input_norm dataset',
                       '--path', str(tmp_path)] + TINY) == 0
    lines = capsys.readouterr().out.splitlines()
    assert '--input_norm dataset --c 10 --name c10_seed1' in lines[2] and len(lines) == 4


@pytest.mark.parametrize('grid, message', [(['bn_weight'], 'use FLAG=VALUE'), (['c=1,1'], 'a value is given twice'),
                                           (['c=1', 'c=2'], '--grid c is given twice'),
                                           (['bn_weight=abc'], "--bn_weight: invalid float value: 'abc'")])
def test_bad_grids_are_refused_in_one_line(grid, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(['--dry_run', '--seeds', '1', *(item for g in grid for item in ('--grid', g))] + TINY)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_grid_runs_with_the_baseline_and_its_report_draws_the_grid(tmp_path, capsys):
    """A 2 x 2 grid and the baseline, 2 seeds: every configuration is tested against the baseline (Holm over the
    four), and the report draws grid.png."""
    argv = ['--seeds', '1-2', '--gpus', '0', '--grid', 'bn_weight=0.1,1', '--grid', 'c=1,100', '--path',
            str(tmp_path)] + TINY + ['--fake_size', '200', '--num_epochs', '1']
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(' on cpu: finished: ') == 10
    report = tmp_path / 'fake' / 'report'
    text = (report / 'report.md').read_text()
    for name in ('bn_weight0.1_c1', 'bn_weight0.1_c100', 'bn_weight1_c1', 'bn_weight1_c100'):
        assert f'| {name} vs baseline | best val. epoch | 2 |' in text
    assert (report / 'grid.png').read_bytes()[:4] == b'\x89PNG' and '[grid.png](grid.png)' in text


def test_sweep_runs_skips_finished_and_reports(tmp_path, capsys):
    argv = ['--seeds', '1-2', '--path', str(tmp_path), '--gpus', '0'] + TINY + ['--num_epochs', '1']
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(' on cpu: finished: ') == 4  # (random labels: a run may have no epoch above 0% val_acc)
    assert '| proposed vs baseline |' in out
    results = tmp_path / 'fake' / 'results'
    assert sorted(p.name for p in results.glob('*.json')) == [
        'baseline_seed1.json', 'baseline_seed2.json', 'proposed_seed1.json', 'proposed_seed2.json']
    assert len(list((tmp_path / 'fake' / 'logs').glob('*.log'))) == 4
    assert (tmp_path / 'fake' / 'report' / 'report.md').exists()
    before = {p: p.stat().st_mtime_ns for p in results.glob('*.json')}
    assert sweep.main(argv) == 0
    assert '4 runs: 4 already finished, 0 to do' in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in results.glob('*.json')}


def test_one_run_is_counted_in_the_singular(tmp_path, capsys):
    assert sweep.main(['--dry_run', '--seeds', '1', '--configs', 'proposed', '--path', str(tmp_path),
                       '--gpus', '0'] + TINY) == 0
    assert '1 run, 0 finished;' in capsys.readouterr().out


def test_a_failed_run_does_not_stop_the_others(tmp_path, capsys):
    argv = ['--seeds', '1', '--path', str(tmp_path), '--gpus', '0', '--configs', 'broken', 'proposed',
            '--config', f'broken=--dataset cifar10 --data_dir {tmp_path}/missing'] + TINY + ['--num_epochs', '1']
    assert sweep.main(argv) == 1
    captured = capsys.readouterr()
    assert (f'broken_seed1 on cpu: FAILED (exit 1: train.py: error: cifar10: no cifar-10-batches-py/' in captured.out
            and f"log {tmp_path / 'cifar10' / 'logs' / 'broken_seed1.log'}" in captured.out)
    assert 'proposed_seed1 on cpu: finished' in captured.out
    assert '2 runs: 0 already finished, 2 to do' in captured.out
    assert '1 run failed: broken_seed1' in captured.err
    log = (tmp_path / 'cifar10' / 'logs' / 'broken_seed1.log').read_text()
    assert 'train.py: error: cifar10: no cifar-10-batches-py/' in log


@pytest.mark.parametrize('status, log, said', [
    (-15, '', 'stopped by SIGTERM'), (143, '', 'stopped by SIGTERM'), (130, '', 'stopped by SIGINT'),
    (-9, '', 'stopped by SIGKILL'),
    (1, '=== old session\ntrain.py: error: an older error\n=== 2026 now\nepoch 1\ntrain.py: error: disk full\n',
     'exit 1: train.py: error: disk full'),
    (1, '\n=== now\nTraceback (most recent call last):\n  File "x"\nRuntimeError: boom\n', 'exit 1: RuntimeError: boom'),
    (2, '', 'exit 2')])
def test_how_a_run_ended_is_said_in_one_line_the_same_way_for_every_run(tmp_path, status, log, said):
    path = tmp_path / 'run.log'
    path.write_text(log)
    assert sweep.ended_by(status, str(path)) == said


def test_killed_sweep_resumes_where_it_stopped(tmp_path):
    command = [sys.executable, 'sweep.py', '--seeds', '1', '--path', str(tmp_path), '--gpus', '0', '--cpu_jobs', '1',
               '--threads', '1', '--no_report'] + TINY + ['--num_epochs', '3', '--fake_size', '8000']  # epochs of ~0.5 s
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / 'fake' / 'logs' / 'baseline_seed1.log'
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and 'epoch   1/3' in log.read_text()):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert 'sweep stopped by SIGTERM' in err
    assert 'baseline_seed1 on cpu: interrupted (stopped by SIGTERM); the same command resumes it' in out
    record = json.loads((tmp_path / 'fake' / 'results' / 'baseline_seed1.json').read_text())
    assert record['status'] in ('interrupted', 'running') and 1 <= len(record['epochs']) < 3
    assert not (tmp_path / 'fake' / 'results' / 'proposed_seed1.json').exists()  # not started after the stop
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert 'resuming baseline_seed1' in log.read_text()
    for name in ('baseline_seed1', 'proposed_seed1'):
        assert json.loads((tmp_path / 'fake' / 'results' / f'{name}.json').read_text())['status'] == 'finished'
    assert os.path.exists(tmp_path / 'fake' / 'logs' / 'proposed_seed1.log')


def test_gpu_slots_keep_the_schedulers_assignment(monkeypatch):
    args = type('Args', (), {'gpus': 2, 'runs_per_gpu': 2, 'cpu_jobs': None, 'threads': None})()
    monkeypatch.setattr(sweep, 'usable_cores', lambda: 16)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3,5')
    assert sweep.slots(args) == ([('cuda', '3'), ('cuda', '3'), ('cuda', '5'), ('cuda', '5')], 4)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    assert sweep.slots(args) == ([('cuda', '0'), ('cuda', '0'), ('cuda', '1'), ('cuda', '1')], 4)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '7')
    with pytest.raises(sweep.SweepError, match=r'only 1 GPU visible \(7\)'):
        sweep.slots(args)


@pytest.mark.parametrize('cores, cpu_jobs, threads, expected', [
    (2, None, None, (2, 1)),   # one single-thread run per core
    (8, None, None, (8, 1)),
    (8, None, 2, (4, 2)),      # the cores shared out among two-thread runs
    (8, 3, None, (3, 2)),
    (2, 1, None, (1, 2)),      # one run at a time uses every core
    (2, 4, 1, (4, 1)),         # told otherwise: as told
])
def test_cpu_slots_fill_the_cores(monkeypatch, cores, cpu_jobs, threads, expected):
    monkeypatch.setattr(sweep, 'usable_cores', lambda: cores)
    args = type('Args', (), {'gpus': 0, 'runs_per_gpu': 1, 'cpu_jobs': cpu_jobs, 'threads': threads})()
    slot_list, each = sweep.slots(args)
    assert (len(slot_list), each) == expected and set(slot_list) == {('cpu', None)}


def test_every_run_gets_the_sweeps_thread_count(tmp_path, capsys):
    assert sweep.main(['--dry_run', '--gpus', '0', '--cpu_jobs', '2', '--seeds', '1-2', '--path', str(tmp_path),
                       *TINY]) == 0
    out = capsys.readouterr().out
    assert out.count('--threads 1 --resume') == 4 and '2 at a time on cpu, 1 thread each' in out
    with pytest.raises(SystemExit):
        sweep.main(['--dry_run', '--gpus', '0', *TINY, '--threads', '2'])
    assert "sweep.py's own --threads" in capsys.readouterr().err


@pytest.mark.parametrize('lock', ['train.py', 'sweep.py'])
def test_a_run_held_by_another_process_is_left_to_it(tmp_path, capsys, lock):
    """A run whose lock (train.py's own, or another sweep's) a live process holds is neither started nor called
    a failure: the sweep says who has it, writes no log for it, and exits 0."""
    import socket
    from revisiting_bn import runs
    holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
    try:
        paths = runs.output_paths(f'{tmp_path}/', 'fake', 'proposed_seed1')
        os.makedirs(paths['results'])
        claim = {'paths': paths, 'name': 'proposed_seed1'}
        lock_file = paths['lock'] if lock == 'train.py' else sweep._sweep_lock(claim)
        with open(lock_file, 'w') as f:
            json.dump({'host': socket.gethostname(), 'pid': holder.pid, 'since': 'now',
                       'process_start': runs.process_start(holder.pid)}, f)
        status = sweep.main(['--gpus', '0', '--configs', 'proposed', '--seeds', '1', '--path', f'{tmp_path}/',
                             '--no_report'] + TINY)
        captured = capsys.readouterr()
        assert status == 0, captured.err
        assert f'proposed_seed1: not started here: it is being trained by process {holder.pid}' in captured.out
        assert '1 run left to the processes training them (proposed_seed1)' in captured.err
        assert 'FAILED' not in captured.out and not (tmp_path / 'fake' / 'logs').exists()
    finally:
        holder.kill()


def test_when_every_run_fails_the_sweep_says_so(tmp_path, capsys):
    (tmp_path / 'not-a-folder').write_text('x')  # each run fails at once (no download is tried)
    status = sweep.main(['--gpus', '0', '--configs', 'proposed', '--seeds', '1-2', '--path', f'{tmp_path}/', '--',
                         '--dataset', 'fashionmnist', '--data_dir', str(tmp_path / 'not-a-folder'), '--network', 'mlp'])
    err = capsys.readouterr().err
    assert status == 1
    assert 'all 2 runs failed: proposed_seed1, proposed_seed2 (see their logs)\n' in err
    assert 'sweep.py: no report: none of the 2 runs has results yet' in err


def test_slurm_where_there_is_none_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, 'which', lambda tool: None)
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(['--slurm', '--seeds', '1', '--path', str(tmp_path)] + TINY)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err == ['sweep.py: error: --slurm: no SLURM here (sbatch, squeue, scontrol not '
                                                 'found)']
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(['--slurm', '--task_index', '0', '--seeds', '1', '--path', str(tmp_path)] + TINY)
    assert exit_info.value.code == 2 and '--slurm submits the array' in capsys.readouterr().err
