"""sweep.py --slurm against a real SLURM (.ci/start_slurm starts one on this machine): the same results as a local
sweep, a requeued task that resumes bit-identical, the documented job-array script, a failing task named. Skipped
where sinfo does not answer."""
import json
import os
import re
import signal
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
    folder = folder / 's' if (folder / 's').is_dir() else folder  # a sweep's home
    record = json.loads((folder / 'fake' / 'results' / f'{name}.json').read_text())
    return record, [{k: v for k, v in e.items() if k != 'epoch_time_s'} for e in record['epochs']]


def best_weights(folder, name):
    folder = folder / 's' if (folder / 's').is_dir() else folder
    return torch.load(folder / 'fake' / 'networks' / f'{name}-best.pt', weights_only=True)


def test_a_sweep_through_slurm_equals_the_same_sweep_run_here(tmp_path, capsys):
    """2 configurations x 1 seed: submitted as one job array, waited for with progress lines, reported; every
    run's metrics and best weights equal those of the local sweep. A second invocation submits nothing again."""
    argv = ['--seeds', '1', '--no_report', '--sweep', 's'] + TINY
    assert sweep.main(['--slurm', '--path', str(tmp_path / 'slurm')] + argv) == 0
    out = capsys.readouterr().out
    assert '2 runs: 0 already finished, 2 submitted as one SLURM job array' in out
    assert 'slurm: 0 pending, 0 running, 2 done, 0 failed' in out
    for name in ('baseline_seed1', 'proposed_seed1'):  # named as they finish
        assert re.search(rf'{name} on SLURM \(task \d+_\d\): finished: (test accuracy at the best|no epoch)', out), out
    assert sweep.main(['--gpus', '0', '--path', str(tmp_path / 'local')] + argv) == 0
    for name in ('baseline_seed1', 'proposed_seed1'):
        (slurm, on_slurm), (_, here) = metrics(tmp_path / 'slurm', name), metrics(tmp_path / 'local', name)
        assert on_slurm == here and slurm['status'] == 'finished', name
        a, b = best_weights(tmp_path / 'slurm', name), best_weights(tmp_path / 'local', name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    capsys.readouterr()
    assert sweep.main(['--slurm', '--path', str(tmp_path / 'slurm')] + argv) == 0
    assert '2 runs: 2 already finished, 0 submitted' in capsys.readouterr().out


def squeue_state(job):
    listed = subprocess.run(['squeue', '-h', '-r', '-o', '%T', '-j', job], capture_output=True, text=True).stdout
    return listed.strip() or None


def test_a_requeued_task_resumes_from_its_checkpoint_and_ends_bit_identical(tmp_path, capsys):
    """scontrol requeue in the middle of a run: SLURM's SIGTERM makes train.py checkpoint, the task runs again
    (StartTime=now lifts SLURM's hold) and resumes; the run equals an uninterrupted one bit for bit."""
    flags = ['--', '--dataset', 'fake', '--fake_size', '8000', '--batch_size', '64', '--network', 'mlp', '--num_epochs',
             '4']  # epochs of about 0.5 s
    argv = ['--configs', 'proposed', '--seeds', '1', '--no_report', '--sweep', 's'] + flags
    assert sweep.main(['--slurm', '--no_wait', '--path', str(tmp_path / 'slurm')] + argv) == 0
    job = json.loads((tmp_path / 'slurm' / 's' / 'slurm' / 'jobs.json').read_text())['proposed_seed1']
    log = tmp_path / 'slurm' / 's' / 'fake' / 'logs' / 'proposed_seed1.log'
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
    script = (script.replace('/shared/bn-init/', f'{tmp_path}/').replace('--sweep cifar10-pair', '--sweep s')
              .replace('--array=0-29', '--array=0-1').replace('-- --dataset cifar10', ' '.join(TINY))
              .replace('sweep.py --task_index', 'sweep.py --seeds 1 --gpus 0 --threads 1 --task_index'))
    script = '\n'.join(line for line in script.splitlines() if '--gres=gpu' not in line) + '\n'
    assert 'srun python sweep.py --seeds 1 --gpus 0 --threads 1 --task_index "$SLURM_ARRAY_TASK_ID"' in script
    (tmp_path / 'job.sh').write_text(script)
    environment = {**os.environ, 'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH']}
    submitted = subprocess.run(['sbatch', '--parsable', '--chdir', ROOT, '-o', str(tmp_path / 'task_%a.out'),
                                str(tmp_path / 'job.sh')], capture_output=True, text=True, env=environment, check=True)
    job = submitted.stdout.strip().split(';')[0]
    deadline = time.time() + 240
    while time.time() < deadline and subprocess.run(['squeue', '-h', '-j', job], capture_output=True,
                                                     text=True).stdout.strip():
        time.sleep(0.5)
    for name in ('baseline_seed1', 'proposed_seed1'):
        assert metrics(tmp_path, name)[0]['status'] == 'finished', (name, [p.read_text()[-500:] for p in
                                                                           tmp_path.glob('task_*.out')])


def test_a_failing_task_is_named_with_the_last_error_line_of_its_log(tmp_path, capsys):
    # 90 training images in batches of 89: a last batch of one image, which train.py refuses once it has the data
    argv = ['--slurm', '--seeds', '1', '--configs', 'broken', '--config', 'broken=--batch_size 89', '--path',
            str(tmp_path), '--no_report'] + TINY
    assert sweep.main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(r'broken_seed1: FAILED on SLURM \(task \d+: train\.py: error: --batch_size 89: the last training '
                     r'batch would hold 1 image', err), err


def test_absent_data_is_refused_before_anything_is_submitted(tmp_path, capsys, monkeypatch):
    """Data that is not there and cannot be had (here: no network) ends the sweep in one line naming it and how to get
    it, before a task is submitted or a folder made."""
    from revisiting_bn import data_files as data

    def offline(name, folder):
        raise OSError('<urlopen error [Errno -2] Name or service not known>')
    monkeypatch.setattr(data, '_fetch', offline)
    before = subprocess.run(['squeue', '-h', '-o', '%i'], capture_output=True, text=True).stdout
    status = sweep.main(['--slurm', '--seeds', '1-2', '--path', str(tmp_path), '--', '--dataset', 'cifar10',
                         '--num_epochs', '1'])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith('sweep.py: error: cifar10: no cifar-10-batches-py/') and 'downloading it failed' in err[0]
    assert 'put the extracted cifar-10-python.tar.gz' in err[0]
    assert not any(tmp_path.iterdir())
    assert subprocess.run(['squeue', '-h', '-o', '%i'], capture_output=True, text=True).stdout == before


def test_ctrl_c_while_waiting_names_what_goes_on_on_the_cluster(tmp_path):
    """Ctrl-C on a sweep waiting for its array: no traceback; it names the array and its tasks still queued or
    running, how to cancel them, and that the same command waits again; that command then finds them queued."""
    command = [sys.executable, 'sweep.py', '--slurm', '--path', str(tmp_path), '--sweep', 's', '--seeds', '1-2',
               '--configs', 'proposed', '--no_report', '--', '--dataset', 'fake', '--fake_size', '8000', '--network',
               'mlp', '--num_epochs', '100']  # minutes of training: still running when the Ctrl-C comes
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    array = None
    try:
        first = process.stdout.readline()  # '2 runs: 0 already finished, 2 submitted as one SLURM job array (N), ...'
        array = re.search(r'job array \((\d+)\)', first).group(1)
        assert process.stdout.readline().startswith('slurm: ')
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
        assert f'stopped waiting by SIGINT: 2 tasks of SLURM job array {array} still queued or running' in err
        assert f'proposed_seed1 ({array}_0 ' in err and f'To cancel them: scancel {array}' in err
        assert 'The same command waits for them again (it submits nothing twice) and reports' in err
        again = subprocess.run([*command[:2], '--no_wait', *command[2:]], cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
        assert '0 submitted as one SLURM job array, 2 still queued from an earlier submission' in again.stdout, again
    finally:
        process.kill()
        if array:
            subprocess.run(['scancel', array])
