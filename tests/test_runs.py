"""A run's files on disk: crash-safe writes, the background writer, one process per run name (a lock with real
processes), stale locks reclaimed, a sweep's files."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, files_under
from revisiting_bn.cli import RunError
from revisiting_bn.runs import BackgroundWriter, RunLock, atomic_write, output_paths, write_text

RUN = ['--dataset', 'fake', '--fake_size', '1000', '--batch_size', '32', '--device', 'cpu', '--network', 'mlp',
       '--num_epochs', '2', '--name', 'same']


def start(folder, *extra):
    return subprocess.Popen([sys.executable, 'train.py', *RUN, '--path', str(folder), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, timeout=120):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert time.time() < deadline, f'{path} never appeared'
        time.sleep(0.05)


def test_a_second_process_for_the_same_run_is_refused(tmp_path):
    lock = output_paths(str(tmp_path), 'fake', 'same')['lock']
    first = start(tmp_path, '--seed', '1')
    wait_for(lock)
    first.send_signal(signal.SIGSTOP)  # frozen while it holds the lock, whatever it was doing
    before = files_under(tmp_path)
    second = subprocess.run([sys.executable, 'train.py', *RUN, '--path', str(tmp_path), '--seed', '2'], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    first.send_signal(signal.SIGCONT)
    assert second.returncode == 2 and 'Traceback' not in second.stderr
    message = second.stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith('train.py: error: same is being trained by process '
                                                       f'{first.pid} on {socket.gethostname()}')
    assert files_under(tmp_path) == before  # the refused process created and removed nothing
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    record = json.loads((tmp_path / 'fake' / 'results' / 'same.json').read_text())
    assert record['config']['seed'] == '1' and not os.path.exists(lock)  # released on the way out


def test_the_lock_of_a_killed_process_is_reclaimed(tmp_path):
    lock = output_paths(str(tmp_path), 'fake', 'same')['lock']
    holder = start(tmp_path)
    wait_for(lock)
    holder.send_signal(signal.SIGKILL)  # at whatever point of its run: no way to clean up
    holder.communicate(timeout=60)
    assert os.path.exists(lock)  # nothing could remove it
    again = subprocess.run([sys.executable, 'train.py', *RUN, '--path', str(tmp_path), '--resume'], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / 'fake' / 'results' / 'same.json').read_text())['status'] == 'finished'


def test_a_lock_held_elsewhere_names_its_host_and_pid_and_creates_nothing(tmp_path):
    paths = output_paths(str(tmp_path / 'shared'), 'fake', 'run')
    os.makedirs(paths['results'])
    with open(paths['lock'], 'w') as f:
        json.dump({'host': 'node042', 'pid': 4711, 'process_start': 1, 'since': '2026-11-24 01:00:00'}, f)
    with pytest.raises(RunError, match=r'run is being trained by process 4711 on node042 \(since 2026-11-24 '
                                       r'01:00:00\).*if that process is gone, delete the lock') as error:
        RunLock(paths).acquire()
    assert error.value.status == 2 and not os.path.exists(paths['networks'])
    os.remove(paths['lock'])
    with RunLock(paths):
        owner = json.loads(open(paths['lock']).read())
        assert owner['pid'] == os.getpid() and os.path.isdir(paths['networks'])
    assert not os.path.exists(paths['lock']) and not os.path.exists(paths['networks'])  # left nothing behind


def test_sigterm_before_training_starts_releases_the_lock(tmp_path):
    """A job cancelled while it loads its data (a train.py process whose data loading sends it SIGTERM as it begins,
    as a signal arriving at that moment would): no traceback, exit 143, no lock and no empty folders left."""
    lock = output_paths(str(tmp_path), 'fake', 'same')['lock']
    code = ('import os, runpy, signal, sys\n'
            'import revisiting_bn.data as data\n'
            'plain = data.load_dataset\n'
            'def loading(*args, **kwargs):\n'
            '    assert os.path.exists(os.environ["LOCK"])  # the lock comes first, then the data\n'
            '    os.kill(os.getpid(), signal.SIGTERM)\n'
            '    return plain(*args, **kwargs)\n'
            'data.load_dataset = loading\n'
            'sys.argv = ["train.py", *sys.argv[1:]]\n'
            'runpy.run_path("train.py", run_name="__main__")\n')
    process = subprocess.Popen([sys.executable, '-c', code, *RUN, '--path', str(tmp_path)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, 'LOCK': lock})
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143 and 'Traceback' not in err and 'stopped by SIGTERM' in err
    assert not os.path.exists(lock) and files_under(tmp_path) == []


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'results.json'
    write_text(str(path), 'complete old content\n')

    def crash_halfway(f):
        f.write(b'half of the new')
        raise OSError(28, 'No space left on device')

    with pytest.raises(OSError, match='No space'):
        atomic_write(str(path), crash_halfway)
    assert path.read_text() == 'complete old content\n'
    assert os.listdir(tmp_path) == ['results.json']  # no temporary file left behind
    write_text(str(path), 'new\n')
    assert path.read_text() == 'new\n'


def test_background_writer_runs_jobs_in_order_and_hands_errors_to_the_caller(tmp_path, capsys):
    order, release = [], threading.Event()

    def slow(name):
        release.wait(5)
        order.append(name)

    writer = BackgroundWriter()
    writer.submit(slow, 'first')
    assert order == []  # submit returns while the job runs
    release.set()
    writer.submit(slow, 'second')  # waits for 'first'
    writer.wait()
    assert order == ['first', 'second']

    def full_disk():
        raise OSError(28, 'No space left on device')

    writer.submit(full_disk)
    with pytest.raises(OSError, match='No space'):
        writer.submit(slow, 'third')  # the previous job's error surfaces at the next call ...
    writer.wait()  # ... once
    with pytest.raises(OSError, match='No space'):
        with writer:
            writer.submit(full_disk)  # ... or when the block ends
    with pytest.raises(ValueError, match='training failed'):
        with writer:
            writer.submit(full_disk)
            raise ValueError('training failed')  # the block's own error wins; the write error is reported
    assert 'also failed to write a file' in capsys.readouterr().err

