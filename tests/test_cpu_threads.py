"""cpu_threads.py and train.py --threads: the thread count a run uses, records and resumes with, and the warning
before runs oversubscribe the cores."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from revisiting_bn import cpu_threads
import train
from conftest import FAST, ROOT


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A private folder for the CPU runs' announcements, and torch's thread count restored afterwards."""
    folder = tmp_path / 'cpu-runs'
    monkeypatch.setenv(cpu_threads.REGISTRY_ENV, str(folder))
    threads = torch.get_num_threads()
    yield folder
    torch.set_num_threads(threads)


@pytest.fixture
def neighbour():
    """Another live process (idle)."""
    process = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
    yield process
    process.kill()
    process.wait()


def announce(folder, pid, threads):
    folder.mkdir(exist_ok=True)
    (folder / f'{pid}.json').write_text(json.dumps({'pid': pid, 'threads': threads}))


def test_default_threads_depend_on_the_environment_only(monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '3')
    assert cpu_threads.default_threads() == 3
    monkeypatch.delenv('OMP_NUM_THREADS')
    monkeypatch.setattr(cpu_threads, 'usable_cores', lambda: 4)
    monkeypatch.setattr(cpu_threads, '_TORCH_DEFAULT', 16)  # torch would take every core of the machine
    assert cpu_threads.default_threads() == 4
    monkeypatch.setattr(cpu_threads, '_TORCH_DEFAULT', 2)
    assert cpu_threads.default_threads() == 2


@pytest.mark.parametrize('threads, busy, cores, advice', [
    (2, 0, 2, None), (1, 2, 2, None), (1, 7, 2, None),  # fits, or a single thread (it never spin-waits)
    (2, 1, 2, 1), (2, 2, 2, 1), (8, 4, 8, 4), (16, 3, 8, 5),
])
def test_oversubscription_warns_with_the_thread_count_that_fits(threads, busy, cores, advice):
    warning = cpu_threads.oversubscription(threads, busy, cores)
    if advice is None:
        assert warning is None
    else:
        assert warning.startswith(f'WARNING: {busy} of the {cores} cores') and f'use --threads {advice} ' in warning
        assert '\n' not in warning


def test_the_load_is_measured_only_for_a_run_of_several_threads():
    """Measuring the cores' load takes 0.3 s; a single-thread run, which never warns, does not wait for it."""
    asked = []
    measure = lambda: asked.append(1) or 2  # noqa: E731
    assert cpu_threads.oversubscription(1, measure, 2) is None and asked == []
    assert cpu_threads.oversubscription(2, measure, 2).startswith('WARNING: 2 of the 2 cores') and asked == [1]


def test_announced_runs_count_while_alive_and_dead_ones_are_removed(registry, neighbour):
    announce(registry, neighbour.pid, 3)
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    announce(registry, int(dead.stdout), 5)
    (registry / 'junk.json').write_text('not json')
    with cpu_threads.CpuRun(2) as run:
        assert json.loads((registry / f'{os.getpid()}.json').read_text())['threads'] == 2
        assert run.others() >= 3
        assert not (registry / f'{dead.stdout.strip()}.json').exists()
    assert not (registry / f'{os.getpid()}.json').exists()  # gone when the run ends


def test_busy_cores_measures_other_programs():
    busy = subprocess.Popen([sys.executable, '-c', 'import time\nend = time.time() + 3\nwhile time.time() < end: pass'])
    try:
        time.sleep(0.5)  # past its start-up
        assert cpu_threads.busy_cores(cpu_threads._Sample(), least_seconds=1.0) >= 1
    finally:
        busy.kill()
        busy.wait()


def test_train_warns_before_training_when_the_cores_are_taken(registry, neighbour, capsys):
    cores = cpu_threads.usable_cores()
    announce(registry, neighbour.pid, cores)
    record = train.main(FAST + ['--num_epochs', '1', '--path', str(registry.parent / 'run'), '--threads', '2'])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and 'use --threads 1 ' in err[0] and f'{cores} of the' in err[0]
    assert record['cpu_threads'] == 2 and record['config']['threads'] == 2


def test_two_runs_started_together_both_warn(registry, tmp_path):
    """Neither has done any work when the other starts: each sees the other's announcement."""
    cores = cpu_threads.usable_cores()
    runs = [subprocess.Popen([sys.executable, 'train.py', *FAST, '--num_epochs', '1', '--threads', str(max(2, cores)),
                              '--path', str(tmp_path / 'runs'), '--name', f'run{i}'], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert 'WARNING' in err and 'use --threads' in err


def test_resuming_with_another_thread_count_warns_and_is_recorded(registry, tmp_path, capsys):
    flags = FAST + ['--path', str(tmp_path), '--name', 'run']
    train.main(flags + ['--num_epochs', '1', '--threads', '1'])
    capsys.readouterr()
    record = train.main(flags + ['--num_epochs', '2', '--resume', '--change_num_epochs', '--threads', '2'])
    err = capsys.readouterr().err
    assert 'resuming with --threads 2, but the epochs so far ran with 1' in err and '--threads 1 keeps it so' in err
    assert record['cpu_threads'] == 2 and record['thread_changes'] == [{'from_epoch': 2, 'cpu_threads': 2}]
