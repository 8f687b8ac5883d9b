"""TensorBoard and MLflow, read back with their own readers: every epoch once (after a kill and a resume too), a sweep's
runs side by side, a server that does not answer, a package that is missing, results files unchanged by tracking."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

import sweep
import train
from conftest import FAST, ROOT

pytest.importorskip('tensorboard')
pytest.importorskip('mlflow')

NAME = 'run'


def scalars(folder, tag):
    """(step, value) of a scalar as TensorBoard shows it (its EventAccumulator, purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance={'scalars': 0, 'histograms': 0})
    events.Reload()
    return events, [(e.step, e.value) for e in events.Scalars(tag)]


def mlflow_runs(uri, experiment):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client, client.search_runs([found.experiment_id]) if found else []


def flags(tmp_path, epochs=3, *extra):
    return [*FAST, '--num_epochs', str(epochs), '--name', NAME, '--path', str(tmp_path / 'runs'), *extra]


def without_times(path):
    record = json.loads(open(path).read())
    for key in ('wall_time_s', 'started_at', 'updated_at', 'command'):
        record.pop(key)
    for row in record['epochs']:
        row.pop('epoch_time_s')
    return record


def test_every_epoch_is_logged_and_read_back_and_no_file_changes(tmp_path, monkeypatch):
    uri = f'sqlite:///{tmp_path}/mlflow.db'
    (tmp_path / 'elsewhere').mkdir()
    monkeypatch.chdir(tmp_path / 'elsewhere')  # the artifacts go beside the database, not into the current folder
    record = train.main(flags(tmp_path, 3, '--tensorboard', str(tmp_path / 'tb'), '--mlflow', uri))
    assert not any((tmp_path / 'elsewhere').iterdir()) and (tmp_path / 'mlruns').is_dir()
    events, accuracy = scalars(tmp_path / 'tb' / NAME, 'val_accuracy')
    assert [step for step, _ in accuracy] == [1, 2, 3] and [v for _, v in accuracy] == pytest.approx(
        [row['val_accuracy'] for row in record['epochs']])
    tags = events.Tags()
    assert {'train_loss', 'val_loss', 'test_accuracy', 'learning_rate/norm_scale', 'learning_rate/bias',
            'learning_rate/weight', 'final/test_accuracy_at_best'} <= set(tags['scalars'])
    assert [s for s, _ in scalars(tmp_path / 'tb' / NAME, 'norm/input_bn/xhat_rms')[1]] == [0, 1, 2, 3]
    assert set(tags['histograms']) == {f'gamma/{layer}' for layer in record['norm_statistics']['layers']}
    assert '_hparams_/session_start_info' in events.PluginTagToContent('hparams')
    client, (run,) = mlflow_runs(uri, 'fake')  # a single run's experiment is its dataset
    assert (run.info.run_name, run.info.status) == (NAME, 'FINISHED')
    assert run.data.params['bn_weight'] == '0.1' and run.data.params['network'] == 'mlp'
    assert run.data.tags['seed'] == '1' and run.data.tags['configuration'] == NAME
    assert run.data.tags['code_version'] == str(record['code_version'])
    history = client.get_metric_history(run.info.run_id, 'test_accuracy')
    assert sorted((m.step, m.value) for m in history) == [(r['epoch'], r['test_accuracy']) for r in record['epochs']]
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id, 'results')) == [
        f'results/{NAME}{suffix}' for suffix in ('.csv', '.json', '.norm_statistics.csv', '.txt')]
    plain = train.main(flags(tmp_path / 'plain', 3))  # the same run without tracking: the same files
    results = [folder / 'runs' / 'fake' / 'results' / NAME for folder in (tmp_path, tmp_path / 'plain')]
    assert plain['status'] == 'finished'
    assert open(f'{results[0]}.txt', 'rb').read() == open(f'{results[1]}.txt', 'rb').read()
    tracked, untracked = (without_times(f'{path}.json') for path in results)
    for config in (tracked['config'], untracked['config']):  # the flags that say where, and where to log
        for key in ('path', 'tensorboard', 'mlflow'):
            config.pop(key)
    tracked.pop('weights_file'), untracked.pop('weights_file')
    assert tracked == untracked


KILL = """
import os, signal, sys
sys.path.insert(0, {root!r})
import train
from revisiting_bn import tracking
plain = tracking.TensorBoard._epoch
def killing(self, record):  # SIGKILL once epoch 2's checkpoint and results are written, before it is logged anywhere
    if record['epochs'][-1]['epoch'] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return plain(self, record)
tracking.TensorBoard._epoch = killing
train.run(sys.argv[1:])
"""


def test_a_killed_run_resumed_logs_every_epoch_exactly_once(tmp_path):
    """SIGKILL after epoch 2's files are written but before any tracker is told of it, then --resume: TensorBoard shows
    epochs 1..4 once each, MLflow holds one run with each epoch's metrics once (epoch 2 included)."""
    uri = f'sqlite:///{tmp_path}/mlflow.db'
    argv = flags(tmp_path, 4, '--tensorboard', str(tmp_path / 'tb'), '--mlflow', uri)
    (tmp_path / 'kill.py').write_text(KILL.format(root=ROOT))
    killed = subprocess.run([sys.executable, str(tmp_path / 'kill.py'), *argv], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert [s for s, _ in scalars(tmp_path / 'tb' / NAME, 'val_accuracy')[1]] == [1]  # epoch 2 was never logged
    assert train.main(argv + ['--resume'])['status'] == 'finished'
    for tag in ('val_accuracy', 'train_loss', 'norm/input_bn/xhat_rms'):
        steps = [step for step, _ in scalars(tmp_path / 'tb' / NAME, tag)[1]]
        assert steps == ([0] if tag.startswith('norm') else []) + [1, 2, 3, 4], (tag, steps)
    client, runs = mlflow_runs(uri, 'fake')
    assert len(runs) == 1 and runs[0].info.status == 'FINISHED'
    for key in ('val_accuracy', 'epoch', 'learning_rate/weight'):
        steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, key))
        assert steps == ([0] if key == 'epoch' else []) + [1, 2, 3, 4], (key, steps)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]  # closed again: nothing answers there


def test_a_server_that_does_not_answer_costs_one_warning_line_and_seconds(tmp_path, capsys):
    started = time.monotonic()
    record = train.main(flags(tmp_path, 2, '--mlflow', f'http://127.0.0.1:{free_port()}'))
    took = time.monotonic() - started
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if 'MLflow' in line]
    assert record['status'] == 'finished' and len(warnings) == 1, err
    assert warnings[0].startswith('WARNING: MLflow (http://127.0.0.1:') and 'the run goes on without it' in warnings[0]
    assert took < 30, took  # not MLflow's minutes of retries


def test_a_tracker_that_fails_mid_run_is_left_alone_after_one_warning(tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient
    plain, calls = MlflowClient.log_batch, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise ConnectionError('the server went away')
        return plain(self, *args, **kwargs)
    monkeypatch.setattr(MlflowClient, 'log_batch', failing)
    record = train.main(flags(tmp_path, 3, '--mlflow', f'sqlite:///{tmp_path}/mlflow.db'))
    err = capsys.readouterr().err
    assert record['status'] == 'finished' and err.count('WARNING: MLflow') == 1 and 'went away' in err
    assert len(calls) == 4  # nothing tried again after the failure


def test_a_missing_package_is_named_with_the_pip_install_before_anything_runs(tmp_path, capsys, monkeypatch):
    import importlib.util
    plain = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'mlflow' else plain(name, *a))
    with pytest.raises(SystemExit) as refused:
        train.run(flags(tmp_path, 1, '--mlflow'))
    err = capsys.readouterr().err.strip().splitlines()
    assert refused.value.code == 2 and len(err) == 1
    assert err[0] == ("train.py: error: --mlflow needs mlflow: pip install 'revisiting-bn[tracking]' (or: pip install "
                      "-r requirements-tracking.txt)")
    assert not (tmp_path / 'runs').exists()


def test_a_sweep_passes_the_trackers_to_every_run(tmp_path, capsys):
    uri = f'sqlite:///{tmp_path}/mlflow.db'
    assert sweep.main(['--seeds', '1', '--path', str(tmp_path), '--sweep', 'pair', '--gpus', '0', '--no_report', '--',
                       '--dataset', 'fake', '--fake_size', '200', '--batch_size', '64', '--network', 'mlp',
                       '--num_epochs', '1', '--tensorboard', str(tmp_path / 'tb'),
                       '--mlflow', uri]) == 0
    assert sorted(os.listdir(tmp_path / 'tb')) == ['baseline_seed1', 'proposed_seed1']  # one --logdir for both
    _, runs = mlflow_runs(uri, 'pair')  # the sweep's own experiment
    assert sorted(run.info.run_name for run in runs) == ['baseline_seed1', 'proposed_seed1']
    assert {run.data.tags['configuration'] for run in runs} == {'baseline', 'proposed'}


def test_a_local_sqlite_stores_artifacts_go_beside_its_database(tmp_path, monkeypatch):
    from revisiting_bn.tracking import artifact_location
    monkeypatch.chdir(tmp_path)
    assert artifact_location('sqlite:////data/lab/mlflow.db') == 'file:///data/lab/mlruns'
    assert artifact_location('sqlite:///runs/mlflow.db') == (tmp_path / 'runs' / 'mlruns').as_uri()
    for uri in (None, 'sqlite:///:memory:', 'http://127.0.0.1:5000', 'file:///x/mlruns'):
        assert artifact_location(uri) is None
