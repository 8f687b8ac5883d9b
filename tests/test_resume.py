"""train.py as a long job: resume after kills and signals, refusals to resume the wrong run, non-finite losses."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import train
from conftest import ROOT

NAME = 'run'
FLAGS = ['--dataset', 'fake', '--fake_size', '100', '--batch_size', '16', '--device', 'cpu', '--num_epochs', '4',
         '--name', NAME, '--network', 'mlp']  # 90 training images: 6 steps per epoch, the last one of 10 images


def outputs(folder):
    """Everything a run leaves: metrics (times removed), best weights, last checkpoint's network."""
    record = json.loads((folder / 'fake/results' / f'{NAME}.json').read_text())
    metrics = [{k: v for k, v in e.items() if k != 'epoch_time_s'} for e in record['epochs']]
    best = torch.load(folder / 'fake/networks' / f'{NAME}-best.pt', weights_only=True)
    last = torch.load(folder / 'fake/networks' / f'{NAME}-last.pt', weights_only=True)
    summary = {k: record[k] for k in ('status', 'best_epoch', 'best_val_accuracy', 'test_accuracy_at_best',
                                      'final_test_accuracy')}
    return metrics, summary, best, last['network'], last['optimizer']['state']


def assert_same_run(a, b):
    assert a[0] == b[0] and a[1] == b[1]
    for state_a, state_b in ((a[2], b[2]), (a[3], b[3])):
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)  # bit-identical
    assert all(torch.equal(a[4][k]['momentum_buffer'], b[4][k]['momentum_buffer']) for k in a[4])


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp('reference')
    record = train.main(FLAGS + ['--path', str(folder)])
    assert record['status'] == 'finished'
    return outputs(folder)


KILLER = """
import io, os, signal, sys
import torch
sys.path.insert(0, {root!r})
import train
from revisiting_bn import checkpoint, engine
step, evaluation, write = {step}, {evaluation}, {write}
calls = {{'steps': 0, 'evaluations': 0, 'writes': 0}}
plain_loss, plain_evaluate, plain_write = torch.nn.CrossEntropyLoss, engine.evaluate_network, checkpoint.atomic_write

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class KillAtStep(torch.nn.Module):  # SIGKILL during training step `step` (1-based, counted in this process)
    def __init__(self):
        super().__init__()
        self.loss = plain_loss()
    def forward(self, logits, labels):
        calls['steps'] += 1
        if calls['steps'] == step:
            die()
        return self.loss(logits, labels)

def kill_in_evaluation(*args, **kwargs):  # SIGKILL during evaluation pass `evaluation`
    calls['evaluations'] += 1
    if calls['evaluations'] == evaluation:
        die()
    return plain_evaluate(*args, **kwargs)

def kill_in_write(path, write_file):  # SIGKILL half-way through checkpoint write `write`, on the writer thread
    if path.endswith('-last.pt'):
        calls['writes'] += 1
        if calls['writes'] == write:
            def half(f):
                buffer = io.BytesIO()
                write_file(buffer)
                f.write(buffer.getbuffer()[:len(buffer.getbuffer()) // 2])
                f.flush()
                die()
            return plain_write(path, half)
    return plain_write(path, write_file)

torch.nn.CrossEntropyLoss = KillAtStep
train.evaluate_network = kill_in_evaluation
checkpoint.atomic_write = kill_in_write
train.run(sys.argv[1:])
"""


def killed(folder, step=0, evaluation=0, write=0, resume=False):
    """A real train.py process that SIGKILLs itself at a point of its own progress: a training step, an evaluation
    pass, or half-way through writing a checkpoint (each counted from where this process starts)."""
    script = folder / 'killer.py'
    script.write_text(KILLER.format(root=ROOT, step=step, evaluation=evaluation, write=write))
    argv = FLAGS + ['--path', str(folder)] + (['--resume'] if resume else [])
    return subprocess.run([sys.executable, str(script), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def checkpoint_position(folder):
    path = folder / 'fake/networks' / f'{NAME}-last.pt'
    if not path.exists():
        return None
    checkpoint = torch.load(path, weights_only=True)
    step = checkpoint['train_step']
    return checkpoint['completed_epochs'], step['steps_done'] if step['in_epoch'] else 0


def test_sigkill_at_several_points_then_resume_is_bit_identical(tmp_path, reference):
    """SIGKILL (nothing can be saved) at five points of each process's own progress, resuming after each (6 steps
    an epoch; a killed process always resumes at an epoch's end, with at least two epochs to go before the last
    two kills): in epoch 1 before any checkpoint; in the middle of epoch 3; half-way through the background write
    of the first checkpoint after resuming; at the first step after the next epoch's end (that epoch's files
    possibly still being written); and during the first validation. Every process is killed, whatever the
    timing, and the finished run equals an uninterrupted one bit for bit."""
    positions = []
    points = [{'step': 3}, {'step': 2 * 6 + 3}, {'write': 1}, {'step': 6 + 1}, {'evaluation': 1}]
    for i, point in enumerate(points):
        process = killed(tmp_path, **point, resume=i > 0)
        assert process.returncode == -signal.SIGKILL, (point, process.stdout, process.stderr)
        positions.append(checkpoint_position(tmp_path))
    # Epoch 1's files are surely written by step 3 of epoch 3 (epoch 2's may still be in flight when killed); a
    # checkpoint killed half-way through its write leaves the previous one in place.
    assert positions[0] is None and 1 <= positions[1][0] <= 2 and positions[2] == positions[1]
    assert positions[1][0] <= positions[3][0] <= positions[4][0] <= 3
    finished = subprocess.run([sys.executable, 'train.py', *FLAGS, '--path', str(tmp_path), '--resume'], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert_same_run(outputs(tmp_path), reference)


class SignalAtStep(nn.Module):
    """Cross-entropy that sends ``signum`` to this process during training step ``step`` (1-based, overall)."""

    def __init__(self, signum, step):
        super().__init__()
        self.signum, self.step, self.calls = signum, step, 0

    def forward(self, logits, labels):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.step:
                os.kill(os.getpid(), self.signum)
        return F.cross_entropy(logits, labels)


@pytest.mark.parametrize('signum, step, position', [
    (signal.SIGTERM, 9, (1, 3)),    # mid epoch 2: stops after its third step
    (signal.SIGINT, 2, (0, 2)),     # mid epoch 1, before any checkpoint
    (signal.SIGTERM, 6, (1, 0)),    # the last step of epoch 1: the epoch completes, then it stops
])
def test_signal_stops_at_a_step_boundary_and_resume_is_bit_identical(tmp_path, reference, monkeypatch, capsys,
                                                                     signum, step, position):
    monkeypatch.setattr(torch.nn, 'CrossEntropyLoss', lambda: SignalAtStep(signum, step))
    with pytest.raises(SystemExit) as stopped:
        train.run(FLAGS + ['--path', str(tmp_path)])
    assert stopped.value.code == 128 + signum
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and signal.Signals(signum).name in message[0]
    assert message[0].endswith(f'--network mlp --path {tmp_path} --threads 1 --resume') and '--name run' in message[0]
    command = message[0].split('Resume with: ')[1]
    assert command.startswith(f'cd {os.getcwd()} && {sys.executable} {ROOT}/')
    assert f'--threads {torch.get_num_threads()} --resume' in command
    assert checkpoint_position(tmp_path) == position
    record = json.loads((tmp_path / 'fake/results' / f'{NAME}.json').read_text())
    assert record['status'] == ('interrupted' if position[1] else 'running')
    # the best weights are named only once written: none yet when stopped in the first epoch
    assert (record['weights_file'] is None) == (position[0] == 0)
    assert record['weights_file'] is None or os.path.exists(record['weights_file'])
    assert len(record['epochs']) == position[0]
    monkeypatch.undo()
    if position == (1, 3):  # the printed command itself, from another folder
        resumed = subprocess.run(['bash', '-c', command], cwd=tmp_path.anchor, capture_output=True, text=True,
                                 timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
    else:
        assert train.main(FLAGS + ['--path', str(tmp_path), '--resume'])['status'] == 'finished'
    assert_same_run(outputs(tmp_path), reference)


class NaNAtStep(nn.Module):
    def __init__(self, step):
        super().__init__()
        self.step, self.calls = step, 0

    def forward(self, logits, labels):
        loss = F.cross_entropy(logits, labels)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.step:
                return loss * float('nan')
        return loss


def test_non_finite_loss_stops_and_keeps_the_last_good_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.nn, 'CrossEntropyLoss', lambda: NaNAtStep(6 + 3))  # epoch 2, step 3
    with pytest.raises(SystemExit) as failed:
        train.run(FLAGS + ['--path', str(tmp_path)])
    assert failed.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == ('train.py: error: non-finite training loss at epoch 2, step 3/6; stopped, keeping the '
                   'checkpoint and results of epoch 1')
    assert checkpoint_position(tmp_path) == (1, 0)
    record = json.loads((tmp_path / 'fake/results' / f'{NAME}.json').read_text())
    assert [e['epoch'] for e in record['epochs']] == [1] and record['status'] == 'failed'  # not a live run
    assert record['error'].startswith('non-finite training loss at epoch 2, step 3/6')
    monkeypatch.undo()
    assert finish(tmp_path, '--resume')['status'] == 'finished'  # resumable from epoch 1's checkpoint


def test_non_finite_loss_in_the_first_epoch_saves_nothing_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.nn, 'CrossEntropyLoss', lambda: NaNAtStep(2))
    with pytest.raises(SystemExit) as failed:
        train.run(FLAGS + ['--path', str(tmp_path)])
    assert failed.value.code == 1 and capsys.readouterr().err.strip() == (
        'train.py: error: non-finite training loss at epoch 1, step 2/6; stopped, before any epoch ended: nothing '
        'was saved')
    assert list(tmp_path.iterdir()) == []  # not even the empty folders


def finish(folder, *extra):
    return train.main(FLAGS + ['--path', str(folder), *extra])


def run_status(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        train.run(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'Traceback' not in err[0]
    return exit_info.value.code, err[0]


def test_finished_run_is_not_retrained(tmp_path, capsys):
    finish(tmp_path)
    json_file = tmp_path / 'fake/results' / f'{NAME}.json'
    before = (json_file.read_bytes(), (tmp_path / 'fake/networks' / f'{NAME}-best.pt').read_bytes())
    status, message = run_status(capsys, FLAGS + ['--path', str(tmp_path)])
    assert status == 2 and 'already has finished results' in message and '--overwrite' in message
    again = train.run(FLAGS + ['--path', str(tmp_path), '--resume'])
    assert 'nothing to do' in capsys.readouterr().out and again['status'] == 'finished'
    assert (json_file.read_bytes(), (tmp_path / 'fake/networks' / f'{NAME}-best.pt').read_bytes()) == before
    status, message = run_status(capsys, FLAGS + ['--path', str(tmp_path), '--overwrite', '--num_epochs', '1'])
    assert status == 2 and 'different experiment' in message and 'num_epochs: 4 -> 1' in message  # kept
    assert (json_file.read_bytes(), (tmp_path / 'fake/networks' / f'{NAME}-best.pt').read_bytes()) == before
    fresh = finish(tmp_path, '--overwrite')  # the same experiment, trained again
    assert fresh['status'] == 'finished' and len(fresh['epochs']) == 4


@pytest.mark.parametrize('extra, expected', [
    (['--bn_weight', '1'], 'bn_weight: 0.1 -> 1.0'),
    (['--seed', '2', '--c', '1'], "c: 100 -> 1.0; seed: '1' -> '2'"),
    (['--network', 'resnet20'], "network: 'mlp' -> 'resnet20'"),
    (['--batch_size', '32', '--input_norm', 'dataset'], "batch_size: 16 -> 32; input_norm: 'bn' -> 'dataset'"),
    (['--num_epochs', '6'], '--num_epochs 6 differs from the checkpoint\'s 4'),
])
def test_resume_refuses_a_different_experiment(tmp_path, capsys, monkeypatch, extra, expected):
    monkeypatch.setattr(torch.nn, 'CrossEntropyLoss', lambda: SignalAtStep(signal.SIGTERM, 8))
    with pytest.raises(SystemExit):
        train.run(FLAGS + ['--path', str(tmp_path)])
    capsys.readouterr()
    status, message = run_status(capsys, FLAGS + ['--path', str(tmp_path), '--resume', *extra])
    assert status == 2 and expected in message


def test_change_num_epochs_extends_the_cosine_schedule(tmp_path, capsys):
    finish(tmp_path, '--num_epochs', '2')
    record = finish(tmp_path, '--num_epochs', '3', '--resume', '--change_num_epochs')
    lrs = [e['learning_rate'] for e in record['epochs']]
    halfway = 1e-8 + (0.1 - 1e-8) * (1 + math.cos(math.pi / 2)) / 2  # 0.05 + 5e-9
    assert len(lrs) == 3 and lrs[0] == 0.1 and lrs[1] == pytest.approx(halfway, rel=1e-12)  # float64 roundings
    assert lrs[2] == pytest.approx(1e-8, abs=1e-9)  # the 2-epoch schedule had reached its minimum
    status, message = run_status(capsys, FLAGS + ['--path', str(tmp_path), '--resume', '--change_num_epochs',
                                                  '--num_epochs', '2'])
    assert status == 2 and '3 epochs are already done' in message


def test_corrupt_or_foreign_checkpoint_is_an_error_not_a_fresh_start(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.nn, 'CrossEntropyLoss', lambda: SignalAtStep(signal.SIGTERM, 8))
    with pytest.raises(SystemExit):
        train.run(FLAGS + ['--path', str(tmp_path)])
    capsys.readouterr()
    path = tmp_path / 'fake/networks' / f'{NAME}-last.pt'
    path.write_bytes(path.read_bytes()[:1000])
    status, message = run_status(capsys, FLAGS + ['--path', str(tmp_path), '--resume'])
    assert status == 1 and 'is corrupt or unreadable' in message
    torch.save(nn.Linear(2, 2).state_dict(), path)
    status, message = run_status(capsys, FLAGS + ['--path', str(tmp_path), '--resume'])
    assert status == 1 and 'is not a train.py checkpoint' in message
    os.remove(path)
    status, message = run_status(capsys, FLAGS + ['--path', str(tmp_path), '--resume'])
    assert status == 2 and 'has results but no checkpoint' in message


def stop_inside(target, name, signum):
    """``target.name`` sending this process ``signum`` as it starts, then doing its work: the signal's handler runs
    inside it, as a signal arriving at that moment of the run would."""
    plain = getattr(target, name)

    def stopping(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return plain(*args, **kwargs)
    return stopping


def image_folder_flags(folder):
    from conftest import write_image_folder
    images = np.random.default_rng(0).integers(0, 256, size=(40, 16, 16), dtype=np.uint8)
    for split, count in (('train', 30), ('test', 10)):
        write_image_folder(folder, split, images[:count], np.arange(count) % 2)
    return ['--dataset', 'folder', '--data_dir', str(folder), '--image_size', '16', '--batch_size', '8']


def fashion_flags(folder):
    from conftest import write_fashionmnist
    write_fashionmnist(folder, train_size=100, test_size=20)
    return ['--dataset', 'fashionmnist', '--data_dir', str(folder), '--batch_size', '16']


START_UP = [  # (what the run is doing, where the signal comes, the data it reads)
    ('parsing its flags', ('train', 'parse_args'), None),
    ('taking its lock', ('revisiting_bn.runs', 'RunLock.acquire'), None),
    ('finding where it stands', ('train', 'find_start'), None),
    ('reading Fashion-MNIST files', ('revisiting_bn.data', 'read_idx'), fashion_flags),
    ('decoding images', ('revisiting_bn.image_folder', '_decode'), image_folder_flags),
    ('splitting off the validation set', ('train', 'split_train_validation'), None),
    ('building the network', ('train', 'construct_network'), None),
    ('making the optimizer', ('train', 'build_optimizer'), None),
    ('taking the layers\' first statistics', ('train', 'NormStatistics'), None),
    ('writing its first checkpoint', ('revisiting_bn.checkpoint', 'save_torch'), None),
    ('writing its results', ('revisiting_bn.results', 'write_text'), None),
    ('saying it is done', ('train', 'outcome'), None),
]


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize('doing, where, data', START_UP, ids=[doing for doing, _, _ in START_UP])
def test_a_stop_at_any_moment_is_said_as_a_stop_with_the_command_that_resumes(tmp_path, monkeypatch, capsys, doing,
                                                                              where, data, signum):
    """SIGTERM or SIGINT while a run parses, locks, reads or decodes its data, builds its network, measures, writes
    its files or ends: never another error (a broad handler around reading a file must not take it for a corrupt
    file), always 'stopped by SIG...' and the command that resumes it, exit 128 + signal; that command then
    finishes the run."""
    import importlib
    flags = FLAGS + ['--path', str(tmp_path / 'runs'), '--num_epochs', '2']
    if data is not None:
        flags += data(tmp_path / 'data')
    module, attribute = where
    owner = importlib.import_module(module)
    for part in attribute.split('.')[:-1]:
        owner = getattr(owner, part)
    monkeypatch.setattr(owner, attribute.split('.')[-1], stop_inside(owner, attribute.split('.')[-1], signum))
    with pytest.raises(SystemExit) as stopped:
        train.run(flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 128 + signum, (doing, err)
    assert len(err) == 1 and err[0].startswith(f'train.py: stopped by {signal.Signals(signum).name} '), (doing, err)
    assert 'error' not in err[0] and 'Resume with: cd ' in err[0] and err[0].endswith('--resume'), (doing, err)
    monkeypatch.undo()
    assert not (tmp_path / 'runs' / flags[flags.index('--dataset') + 1] / 'results' / f'.{NAME}.lock').exists()
    assert train.main(flags + ['--resume'])['status'] == 'finished'


def test_a_stop_while_the_process_starts_is_a_stop_whenever_it_comes(tmp_path):
    """A real train.py process sent SIGTERM at several moments of its start (importing torch, loading, building,
    training): each ends as a stop or, too late to stop, as a finished run; never with an error or a traceback."""
    flags = ['train.py', '--dataset', 'fake', '--fake_size', '2000', '--batch_size', '64', '--network', 'resnet20',
             '--num_epochs', '1', '--threads', '1', '--name', NAME]
    for delay in (0.2, 1.0, 2.0, 3.0, 4.5):
        process = subprocess.Popen([sys.executable, *flags, '--path', str(tmp_path / str(delay))], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=300)
        assert 'Traceback' not in err and 'error' not in err, (delay, err)
        assert (process.returncode, err.count('stopped by SIGTERM')) in ((143, 1), (0, 0)), (delay, err)
