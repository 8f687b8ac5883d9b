"""Watching runs where researchers watch them: TensorBoard and MLflow, each told every epoch the run writes.

Both are optional (``pip install '.[tracking]'``) and imported only when asked for
(``--tensorboard DIR``, ``--mlflow [URI]``). lifecycle.RunOutputs tells them each epoch once its
files are written, on its background thread, so a tracker never delays training and never
changes a file. A tracker that fails (an MLflow server that does not answer, or stops answering)
costs one warning line and is then left alone: the run goes on and keeps every file. A resumed
run continues its own tracking: TensorBoard drops what an interrupted session logged after the
checkpoint (purge_step) and the checkpoint's last epoch is logged again; MLflow goes on with the
same run (its id kept in the checkpoint) and logs the epochs it lacks, each once.
"""
import importlib.util
import math
import os
import pathlib
import sys
import time

__all__ = ['INSTALL', 'missing_package', 'epoch_scalars', 'artifact_location', 'experiment_id_of', 'prepare_mlflow', 'make_trackers',
           'TensorBoard', 'MLflow']

INSTALL = "pip install 'revisiting-bn[tracking]' (or: pip install -r requirements-tracking.txt)"
# MLflow's HTTP client retries a request 7 times over minutes by default; a run waits seconds at most.
MLFLOW_PATIENCE = {'MLFLOW_HTTP_REQUEST_MAX_RETRIES': '1', 'MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR': '1',
                   'MLFLOW_HTTP_REQUEST_TIMEOUT': '5'}
RESULTS = ('json', 'txt', 'csv', 'statistics_csv')  # the run's files an MLflow run keeps as artifacts
FINAL = ('test_accuracy_at_best', 'final_test_accuracy', 'best_val_accuracy')  # a finished run's results


def missing_package(tensorboard=None, mlflow=None):
    """One line naming what to install when a tracker is asked for without its package, or None."""
    wanted = [package for package, asked in (('tensorboard', tensorboard), ('mlflow', mlflow)) if asked is not None]
    missing = [package for package in wanted if importlib.util.find_spec(package) is None]
    if missing:
        return f'--{" and --".join(missing)} need{"s" if len(missing) == 1 else ""} {" and ".join(missing)}: {INSTALL}'
    return None


def epoch_scalars(record, epoch):
    """{name: value} of epoch ``epoch`` as the trackers log it: the epoch's losses and accuracies as in N.csv, the
    learning rate of each parameter group, and every per-layer statistic (epoch 0: the statistics alone)."""
    scalars = {}
    row = next((row for row in record['epochs'] if row['epoch'] == epoch), None)
    if row is not None:
        scalars.update({key: row[key] for key in ('train_loss', 'val_loss', 'val_accuracy', 'test_accuracy')})
        groups = row.get('group_learning_rates') or {'all': row['learning_rate']}
        scalars.update({f'learning_rate/{group}': lr for group, lr in groups.items()})
    stats = record.get('norm_statistics') or {}
    entry = next((e for e in stats.get('epochs', []) if e['epoch'] == epoch), None)
    for layer, values in (entry or {}).get('layers', {}).items():
        scalars.update({f'norm/{layer}/{name}': value for name, value in values.items()
                        if isinstance(value, (int, float)) and math.isfinite(value)})
    return scalars


def _settings(record):
    """The run's settings as trackers keep them: numbers, text and switches (None as text)."""
    config = {key: value for key, value in record['config'].items() if key != 'given'}
    config.update({f'given_{key}': value for key, value in record['config'].get('given', {}).items()})
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in config.items()}


class _Tracker:
    """What RunOutputs asks of a tracker; a failure turns it off with one warning line."""
    label = ''

    def __init__(self):
        self.broken = False

    def _guarded(self, what, *args):
        if self.broken:
            return
        try:
            what(*args)
        except Exception as error:  # a tracker never costs the run
            self.broken = True
            first = (str(error).strip().splitlines() or [''])[0][:200]
            print(f'WARNING: {self.label} failed ({type(error).__name__}: {first}); the run goes on without it '
                  f'(every file is written as usual)', file=sys.stderr, flush=True)

    def epoch(self, record):
        self._guarded(self._epoch, record)

    def close(self, record, status):
        self._guarded(self._close, record, status)

    def ids(self):
        return {}


class TensorBoard(_Tracker):
    """Scalars per epoch (step = the epoch), gamma's histogram per layer, the settings and final metrics in the
    HParams dashboard, under DIR/{run name}/."""

    def __init__(self, folder, name, record, resumed_at=None):
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter
        self.label = f'TensorBoard ({folder})'
        self.writer = SummaryWriter(log_dir=os.path.join(folder, name), purge_step=resumed_at)
        self._guarded(self._begin, record, 0 if resumed_at is None else resumed_at)

    def _begin(self, record, epoch):
        """The settings for the HParams dashboard, then the run's first step: a new run's epoch 0 (the layers before
        training), or, resumed, the checkpoint's last epoch again (what came after it is purged)."""
        from torch.utils.tensorboard.summary import hparams
        metrics = {f'final/{key}': 0.0 for key in FINAL}
        for summary in hparams(_settings(record), metrics):
            self.writer.file_writer.add_summary(summary)
        self._log(record, epoch)
        self.writer.flush()

    def _log(self, record, epoch):
        for tag, value in epoch_scalars(record, epoch).items():
            self.writer.add_scalar(tag, value, epoch)
        for layer, gamma in (record.get('norm_statistics') or {}).get('gamma', {}).items():
            if gamma:  # the layers' gammas now, at the record's latest epoch: this one
                import numpy as np
                self.writer.add_histogram(f'gamma/{layer}', np.asarray(gamma), epoch)

    def _epoch(self, record):
        self._log(record, record['epochs'][-1]['epoch'])
        self.writer.flush()

    def _close(self, record, status):
        if status == 'finished':
            for key in FINAL:
                if record.get(key) is not None:
                    self.writer.add_scalar(f'final/{key}', record[key], record['epochs'][-1]['epoch'])
        self.writer.close()


class MLflow(_Tracker):
    """One MLflow run per train.py run, named as the run, in the experiment of its sweep (or its dataset): the
    settings as params, configuration, seed and code version as tags, every epoch's scalars as metrics (step = the
    epoch; 'epoch' itself among them, so a resumed run finds what is logged), and the results files as artifacts
    when the run ends."""

    def __init__(self, uri, experiment, name, record, files, known_run_id=None):
        super().__init__()
        self.uri, self.files = uri or os.environ.get('MLFLOW_TRACKING_URI') or None, files
        self.label, self.client, self.run_id = f'MLflow ({self.uri or "its default store"})', None, None
        self._guarded(self._begin, experiment, name, record, known_run_id)

    def _begin(self, experiment, name, record, known_run_id):
        self.client = _client(self.uri)
        if known_run_id:  # a resumed run goes on in its own MLflow run
            self.run_id = known_run_id
            self.client.update_run(known_run_id, status='RUNNING')
        else:
            self.run_id = self._new_run(experiment, name, record)
        logged = {metric.step for metric in self.client.get_metric_history(self.run_id, 'epoch')}
        stats = (record.get('norm_statistics') or {}).get('epochs', [])
        for epoch in sorted({*(e['epoch'] for e in stats[:1]), *(row['epoch'] for row in record['epochs'])} - logged):
            self._log(record, epoch)

    def _new_run(self, experiment, name, record):
        from mlflow.entities import Param
        experiment_id = experiment_id_of(self.client, experiment, self.uri)
        config = record['config']
        tags = {'configuration': name.rsplit('_seed', 1)[0], 'seed': str(config.get('seed')),
                'code_version': str(record.get('code_version')), 'dataset': str(config.get('dataset'))}
        run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        params = [Param(key, str(value)[:6000]) for key, value in _settings(record).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start:start + 100])
        return run_id

    def _log(self, record, epoch):
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        scalars = {'epoch': epoch, **epoch_scalars(record, epoch)}
        metrics = [Metric(key, float(value), now, epoch) for key, value in scalars.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def _epoch(self, record):
        self._log(record, record['epochs'][-1]['epoch'])

    def _close(self, record, status):
        for path in self.files:
            if os.path.exists(path):
                self.client.log_artifact(self.run_id, path, 'results')
        self.client.set_terminated(self.run_id, {'finished': 'FINISHED', 'failed': 'FAILED'}.get(status, 'KILLED'))

    def ids(self):
        return {'mlflow_run_id': self.run_id} if self.run_id and not self.broken else {}


def _client(uri):
    import logging

    from mlflow.tracking import MlflowClient
    for logger in ('mlflow', 'alembic'):  # their notes on creating a store would fill the run's log
        logging.getLogger(logger).setLevel(logging.WARNING)
    for key, value in MLFLOW_PATIENCE.items():
        os.environ.setdefault(key, value)
    return MlflowClient(tracking_uri=uri)


def artifact_location(uri):
    """Where a new experiment of the store at ``uri`` keeps its runs' artifacts: for a local SQLite store, the folder
    mlruns beside its database file; else None, MLflow's own choice. (For a SQLite store MLflow's own is ./mlruns in
    the current folder, which moves with the folder each run is started from.)"""
    prefix = 'sqlite:///'
    if not uri or not uri.startswith(prefix) or uri[len(prefix):] in ('', ':memory:'):
        return None
    return pathlib.Path(os.path.abspath(uri[len(prefix):])).parent.joinpath('mlruns').as_uri()


def experiment_id_of(client, experiment, uri=None):
    """The id of MLflow experiment ``experiment`` of the store at ``uri``, made if there is none (by this process or,
    a moment ago, another)."""
    found = client.get_experiment_by_name(experiment)
    if found:
        return found.experiment_id
    try:
        return client.create_experiment(experiment, artifact_location=artifact_location(uri))
    except Exception:
        found = client.get_experiment_by_name(experiment)  # a run started beside this one made it first
        if found is None:
            raise
        return found.experiment_id


def prepare_mlflow(uri, experiment):
    """Before a sweep's runs start side by side: MLflow's store and the sweep's experiment, made once (runs making a
    new SQLite store at once would race); one warning line where MLflow cannot be reached, and the runs go on."""
    uri = uri or os.environ.get('MLFLOW_TRACKING_URI') or None
    try:
        experiment_id_of(_client(uri), experiment, uri)
    except Exception as error:
        print(f'WARNING: MLflow ({uri or "its default store"}) failed ({type(error).__name__}: '
              f'{(str(error).strip().splitlines() or [""])[0][:200]}); each run will try it once and go on without it',
              file=sys.stderr, flush=True)


def make_trackers(args, paths, record, checkpoint=None, experiment=None):
    """The trackers asked for by train.py's ``args`` (``tensorboard``, ``mlflow``) for the run whose files are
    ``paths``, starting from ``record``; ``checkpoint`` (a resumed run's) tells where they left off; ``experiment``
    names the MLflow experiment (default: the dataset)."""
    resumed_at = checkpoint['completed_epochs'] if checkpoint else None
    known = (checkpoint or {}).get('tracking', {})
    trackers = []
    if args.tensorboard:
        trackers.append(TensorBoard(args.tensorboard, args.name, record, resumed_at))
    if args.mlflow is not None:
        trackers.append(MLflow(args.mlflow, experiment or args.dataset, args.name, record,
                               [paths[key] for key in RESULTS], known.get('mlflow_run_id')))
    return trackers
