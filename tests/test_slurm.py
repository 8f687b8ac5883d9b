"""sweep.py --slurm against a real SLURM (.ci/start_slurm starts one on this machine): the same results as a local
sweep, a requeued task that resumes bit-identical, the documented job-array script, a failing task named. Skipped
where sinfo does not answer."""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

import sweep
from conftest import ROOT


def slurm_up():
    try:
        states = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(state.strip() in ('idle', 'mixed', 'allocated') for state in states.splitlines())


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(not slurm_up(), reason='no SLURM answers here (sinfo)')]
TINY = ['--', '--dataset', 'fake', '--fake_size', '100', '--batch_size', '32', '--network', 'mlp', '--num_epochs', '2']


def metrics(folder, name):
    record = json.loads((folder / 'fake' / 'results' / f'{name}.json').read_text())
    return record, [{k: v for k, v in e.items() if k != 'epoch_time_s'} for e in record['epochs']]


def best_weights(folder, name):
    return torch.load(folder / 'fake' / 'networks' / f'{name}-best.pt', weights_only=True)


def test_a_sweep_through_slurm_equals_the_same_sweep_run_here(tmp_path, capsys):
    """2 configurations x 2 seeds: submitted as one job array, waited for with progress lines, reported; every
    run's metrics and best weights equal those of the local sweep. A second invocation submits nothing again."""
    argv = ['--seeds', '1-2', '--no_report'] + TINY
    assert sweep.main(['--slurm', '--path', str(tmp_path / 'slurm')] + argv) == 0
    out = capsys.readouterr().out
    assert '4 runs: 0 already finished, 4 submitted as one SLURM job array' in out
    assert 'slurm: 0 pending, 0 running, 4 done, 0 failed' in out
    assert sweep.main(['--gpus', '0', '--path', str(tmp_path / 'local')] + argv) == 0
    for name in ('baseline_seed1', 'baseline_seed2', 'proposed_seed1', 'proposed_seed2'):
        (slurm, on_slurm), (_, here) = metrics(tmp_path / 'slurm', name), metrics(tmp_path / 'local', name)
        assert on_slurm == here and slurm['status'] == 'finished', name
        a, b = best_weights(tmp_path / 'slurm', name), best_weights(tmp_path / 'local', name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    capsys.readouterr()
    assert sweep.main(['--slurm', '--path', str(tmp_path / 'slurm')] + argv) == 0
    assert '4 runs: 4 already finished, 0 submitted' in capsys.readouterr().out


def squeue_state(job):
    listed = subprocess.run(['squeue', '-h', '-r', '-o', '%T', '-j', job], capture_output=True, text=True).stdout
    return listed.strip() or None


def test_a_requeued_task_resumes_from_its_checkpoint_and_ends_bit_identical(tmp_path, capsys):
    """scontrol requeue in the middle of a run: SLURM's SIGTERM makes train.py checkpoint, the task runs again
    (StartTime=now lifts SLURM's hold) and resumes; the run equals an uninterrupted one bit for bit."""
    flags = ['--', '--dataset', 'fake', '--fake_size', '8000', '--batch_size', '64', '--network', 'mlp', '--num_epochs',
             '4']  # epochs of about 0.5 s
    argv = ['--configs', 'proposed', '--seeds', '1', '--no_report'] + flags
    assert sweep.main(['--slurm', '--no_wait', '--path', str(tmp_path / 'slurm')] + argv) == 0
    job = json.loads((tmp_path / 'slurm' / 'fake' / 'slurm' / 'jobs.json').read_text())['proposed_seed1']
    log = tmp_path / 'slurm' / 'fake' / 'logs' / 'proposed_seed1.log'
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and 'epoch   1/4' in log.read_text()):
        time.sleep(0.2)
    subprocess.run(['scontrol', 'requeue', job], check=True)
    while time.time() < deadline and squeue_state(job) != 'PENDING':
        time.sleep(0.2)
    subprocess.run(['scontrol', 'update', f'JobId={job}', 'StartTime=now'], check=True)
    capsys.readouterr()
    assert sweep.main(['--slurm', '--path', str(tmp_path / 'slurm')] + argv) == 0  # waits for the queued task
    out, text = capsys.readouterr().out, log.read_text()
    assert '1 still queued from an earlier submission' in out and '0 submitted' in out
    assert 'stopped by SIGTERM' in text and 'resuming proposed_seed1' in text
    assert sweep.main(['--gpus', '0', '--path', str(tmp_path / 'local')] + argv) == 0
    (record, on_slurm), (_, here) = metrics(tmp_path / 'slurm', 'proposed_seed1'), metrics(tmp_path / 'local',
                                                                                          'proposed_seed1')
    assert on_slurm == here and record['status'] == 'finished'
    a, b = best_weights(tmp_path / 'slurm', 'proposed_seed1'), best_weights(tmp_path / 'local', 'proposed_seed1')
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_documented_job_array_script_runs_as_written(tmp_path):
    """docs/distributed.md's script, with its shared folder, dataset flags and array size put for this machine (and
    no GPU asked for: there is none here), submitted with sbatch: every task trains its run."""
    docs = open(os.path.join(ROOT, 'docs', 'distributed.md')).read()
    script = re.search(r'```bash\n(#!/bin/bash\n#SBATCH.*?)```', docs, flags=re.S).group(1)
    script = (script.replace('/shared/bn-init/', f'{tmp_path}/')
              .replace('--array=0-29', '--array=0-3').replace('-- --dataset cifar10', ' '.join(TINY))
              .replace('sweep.py --task_index', 'sweep.py --seeds 1-2 --gpus 0 --threads 1 --task_index'))
    script = '\n'.join(line for line in script.splitlines() if '--gres=gpu' not in line) + '\n'
    assert 'srun python sweep.py --seeds 1-2 --gpus 0 --threads 1 --task_index "$SLURM_ARRAY_TASK_ID"' in script
    (tmp_path / 'job.sh').write_text(script)
    environment = {**os.environ, 'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH']}
    submitted = subprocess.run(['sbatch', '--parsable', '--chdir', ROOT, '-o', str(tmp_path / 'task_%a.out'),
                                str(tmp_path / 'job.sh')], capture_output=True, text=True, env=environment, check=True)
    job = submitted.stdout.strip().split(';')[0]
    deadline = time.time() + 240
    while time.time() < deadline and subprocess.run(['squeue', '-h', '-j', job], capture_output=True,
                                                     text=True).stdout.strip():
        time.sleep(0.5)
    for name in ('baseline_seed1', 'baseline_seed2', 'proposed_seed1', 'proposed_seed2'):
        assert metrics(tmp_path, name)[0]['status'] == 'finished', (name, [p.read_text()[-500:] for p in
                                                                           tmp_path.glob('task_*.out')])


def test_a_failing_task_is_named_with_the_last_error_line_of_its_log(tmp_path, capsys):
    argv = ['--slurm', '--seeds', '1', '--configs', 'broken', '--config',
            f'broken=--dataset cifar10 --data_dir {tmp_path}/missing', '--path', str(tmp_path), '--no_report'] + TINY
    assert sweep.main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(r'broken_seed1: FAILED on SLURM \(task \d+: train\.py: error: cifar10: no cifar-10-batches-py/',
                     err), err
