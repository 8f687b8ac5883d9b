"""A run's results record: its shape, how it grows each epoch, its files (their formats written here only).

A run named N writes (see runs.py for where):
  N.txt    the original code's results file: 'Setting: value,,,, ' lines, then a CSV table
  N.csv    the same epochs as a plain CSV (a header row, then a row per epoch)
  N.json   configuration, every epoch's metrics, best epoch, versions, status, per-layer statistics
  N.norm_statistics.csv   those statistics as one flat table (a row per epoch and layer)
Sweeps name runs {configuration}_seed{seed}; ``group_runs`` pairs them back by seed.
"""
import glob
import json
import os
import platform
import re
from .cli import RunError, plural
from .experiment import PAIRING, as_trained, comparable, differing_settings, protocol
from .protocol import VALIDATION_SPLIT_SEED
from .runs import sweep_home_of, write_text

__all__ = ['RESULT_COLUMNS', 'TEXT_SETTINGS', 'ResultsError', 'results_text', 'results_json', 'results_csv',
           'statistics_csv', 'write_results', 'new_record', 'resumed_record', 'add_epoch', 'add_norm_statistics',
           'add_signal_warning', 'interrupted',
           'record_failure', 'read_record', 'is_finished', 'has_best', 'outcome',
           'result_files', 'load_runs', 'RunList', 'split_policy', 'group_runs', 'group_protocols']

SEED_SUFFIX = re.compile(r'_seed(\d+)$')


class ResultsError(RunError):
    """Result files that cannot be used together: none found, duplicates, mixed settings."""

RESULT_COLUMNS = ('epoch', 'train_loss', 'val_loss', 'val_accuracy', 'test_accuracy')


# The original code's results file: these settings, in this order and spelling, then the table.
TEXT_SETTINGS = (('Name', 'name'), ('Dataset', 'dataset'), ('Network', 'network'), ('Batch Size', 'batch_size'),
                 ('Num Epochs', 'num_epochs'), ('Learning Rate', 'learning_rate'), ('LR Scheduler', 'scheduler'),
                 ('Momentum', 'momentum'), ('Weight Decay', 'weight_decay'), ('BN Intial Scale', 'bn_weight'),
                 ('LR Reduction Value', 'c'), ('Input Normalization Method', 'input_norm'))


def results_text(config, epochs):
    """The original code's results file, byte for byte: 'Setting: value,,,, ' lines, then a CSV table
    with 0-based epochs and every value as Python prints it (the JSON holds everything else)."""
    given = {**config, **config.get('given', {})}  # the original writes the flags as given (--bn_weight -1 too)
    lines = [f'{label}: {given[key]},,,, ' for label, key in TEXT_SETTINGS]
    lines.append(','.join(RESULT_COLUMNS) + ' ')
    lines += [f"{row['epoch'] - 1},{row['train_loss']},{row['val_loss']},{row['val_accuracy']},"
              f"{row['test_accuracy']} " for row in epochs]
    return '\n'.join(lines) + '\n'


def results_json(record):
    return json.dumps(record, indent=1) + '\n'


CSV_COLUMNS = (*RESULT_COLUMNS, 'learning_rate', 'epoch_time_s')


def results_csv(epochs):
    """The per-epoch numbers as plain CSV: one header row, one row per epoch (1-based), values as Python prints
    them, so that pandas.read_csv reads it as it is."""
    return '\n'.join([','.join(CSV_COLUMNS)] + [','.join(str(row.get(key, '')) for key in CSV_COLUMNS)
                                                for row in epochs]) + '\n'


def statistics_csv(section):
    """The per-layer statistics of a record's 'norm_statistics' section as one flat table: a row per epoch and
    layer (in network order) with the kind of statistics x_hat used ('batch' or 'running'), a column per statistic,
    values as Python prints them (empty where a layer has none, e.g. gamma without affine), so that pandas.read_csv
    reads it as it is."""
    rows = [(e['epoch'], layer, e.get('statistics', 'running'), e['layers'].get(layer, {}))
            for e in section['epochs'] for layer in section['layers']]
    columns = list(dict.fromkeys(key for *_, stats in rows for key in stats))
    lines = [','.join(['epoch', 'layer', 'statistics', *columns])]
    lines += [','.join([str(epoch), _csv_field(layer), kind, *(str(stats.get(key, '')) for key in columns)])
              for epoch, layer, kind, stats in rows]
    return '\n'.join(lines) + '\n'


def _csv_field(text):
    return f'"{text}"' if any(c in text for c in ',"\n') else text


def write_results(paths, record):
    """The run's results files: the original's .txt, the per-epoch CSV, the per-layer statistics as a flat CSV
    (when the run records them) and the JSON record."""
    write_text(paths['txt'], results_text(record['config'], record['epochs']))
    write_text(paths['csv'], results_csv(record['epochs']))
    if record.get('norm_statistics'):
        write_text(paths['statistics_csv'], statistics_csv(record['norm_statistics']))
    write_text(paths['json'], results_json(record))


def code_version():
    """The git commit of this code (with '+changes' when the work tree differs from it), or None."""
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode:
        return None
    return commit.stdout.strip() + ('+changes' if dirty.stdout.strip() else '')


def cpu_model():
    """The CPU's model name as the operating system gives it (Linux: /proc/cpuinfo), or None: with the instruction
    set and the thread count it decides how a CPU run rounds (MKL picks its kernels by vendor too)."""
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), None)
    except OSError:
        return platform.processor() or None


def now():
    """This moment as records keep it: local time, to the second, with its offset from UTC."""
    import datetime
    return datetime.datetime.now().astimezone().isoformat(timespec='seconds')


def new_record(config, device, **facts):
    """The JSON results of a run that has not finished an epoch yet."""
    from importlib.metadata import PackageNotFoundError, version

    import torch
    try:
        torchvision_version = version('torchvision')
    except PackageNotFoundError:
        torchvision_version = None
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'
    return {'config': config, 'status': 'running', **facts, 'epochs': [], 'best_epoch': None,
            'best_val_accuracy': None, 'test_accuracy_at_best': None, 'final_test_accuracy': None,
            'wall_time_s': 0.0, 'weights_file': None, 'device': str(device), 'device_name': name,
            'cpu_threads': torch.get_num_threads(), 'cpu_capability': torch.backends.cpu.get_cpu_capability(),
            'cpu_model': cpu_model(), 'code_version': code_version(),
            'torch_version': str(torch.__version__), 'torchvision_version': torchvision_version,
            'python_version': platform.python_version(), 'started_at': now()}


def resumed_record(saved, config, world_size, first_epoch):
    """A resumed run's record: the checkpoint's, running again from ``first_epoch``, with this session's
    configuration; a new CPU thread count is noted with the epoch it starts from (it changes the rounding)."""
    import torch
    record = {**saved, 'config': config, 'status': 'running', 'world_size': world_size}
    threads = torch.get_num_threads()
    if saved.get('cpu_threads') not in (None, threads):
        record['cpu_threads'] = threads
        record['thread_changes'] = [*saved.get('thread_changes', []),
                                    {'from_epoch': first_epoch, 'cpu_threads': threads}]
    return record


def add_epoch(record, row, last, wall_time_s, step_path, weights_file):
    """Record an epoch's metrics, the run's time so far and which training step ran; True when its validation
    accuracy beats the best so far (from 0, as the original), so its weights (``weights_file``) are kept."""
    improved = row['val_accuracy'] > (record['best_val_accuracy'] or 0.0)
    if improved:
        record.update(best_epoch=row['epoch'], best_val_accuracy=row['val_accuracy'],
                      test_accuracy_at_best=row['test_accuracy'], weights_file=weights_file)
    record['epochs'].append(row)
    record.update(final_test_accuracy=row['test_accuracy'], status='finished' if last else 'running',
                  wall_time_s=wall_time_s, step_path=dict(step_path), updated_at=now())
    return improved


def add_norm_statistics(record, measured):
    """Add one moment's per-layer statistics (norm_statistics.NormStatistics.measured) to the record's
    'norm_statistics' section: the epoch's measurements, and the layers' latest gammas for their final
    distribution."""
    section = record.setdefault('norm_statistics', {**measured['about'], 'epochs': []})
    section['epochs'].append(measured['epoch'])
    section['gamma'] = measured['gamma']


def add_signal_warning(record, warning):
    """Keep a warning about the signal (norm_statistics.signal_warnings) in the record's 'signal_warnings', the
    first of each kind only; True when it is new, to be said."""
    kept = record.setdefault('signal_warnings', [])
    if any(earlier['kind'] == warning['kind'] for earlier in kept):
        return False
    kept.append(warning)
    return True


def record_failure(paths, status, problem):
    """Mark the run's results JSON on disk with ``status`` ('failed' or 'interrupted') and ``problem`` (one line)
    where it still says 'running': its other files stay those of the last saved epoch, from which --resume
    continues. Best effort: on a disk that stays full, the JSON stays as it was."""
    record = read_record(paths['json'])
    if record and record.get('status') == 'running':
        record.update(status=status, error=problem)
        try:
            write_text(paths['json'], results_json(record))
        except OSError:
            pass


def interrupted(record, wall_time_s):
    """The record of a run stopped by a signal within an epoch (its checkpoint holds the position)."""
    return {**record, 'status': 'interrupted', 'wall_time_s': wall_time_s}


def read_record(path):
    """The JSON results at ``path``, or None if there are none or they cannot be read."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_finished(record):
    return bool(record) and record.get('status') == 'finished'


def has_best(record):
    """Whether some epoch's validation accuracy beat 0% (the original's starting best), so there are best
    weights and a test accuracy at the best epoch."""
    return bool(record) and record.get('test_accuracy_at_best') is not None


def outcome(record):
    """A finished run's result in words, for the console."""
    if not has_best(record):
        return 'no epoch\'s validation accuracy was above 0%, so there is no best epoch and no best weights'
    return (f"test accuracy at the best validation epoch ({record['best_epoch']}, val_acc "
            f"{record['best_val_accuracy']:.2f}%): {record['test_accuracy_at_best']:.2f}%")


def result_files(inputs):
    """Every .json file under ``inputs``: files, folders (searched recursively) or glob patterns; a file reached
    twice (the same path given twice, or a folder and a file in it) counts once."""
    files = []
    for item in inputs:
        matches = sorted(glob.glob(item)) or [item]
        for match in matches:
            if os.path.isdir(match):
                files += sorted(glob.glob(os.path.join(match, '**', '*.json'), recursive=True))
            elif os.path.isfile(match):
                files.append(match)
            else:
                raise ResultsError(f'{item}: no such file or folder')
    unique = {}
    for file in files:
        unique.setdefault(os.path.realpath(file), file)
    return list(unique.values())


def load_runs(inputs, skip_unreadable=False):
    """Every train.py result under ``inputs`` as dicts: label (the name without '_seed<N>'), seed, record (its
    configuration as it trained: experiment.as_trained), file, and sweep (the home of the sweep that made it, or None).

    A .json file that cannot be read (truncated, not JSON) is refused by name, unless ``skip_unreadable``:
    then the runs come with ``unreadable``, the list of files left out, for the caller to say so. Readable JSON
    that is not a train.py result (a sweep's own files, a bench JSON) is passed over.
    """
    runs, unreadable = [], []
    for file in result_files(inputs):
        try:
            with open(file) as f:
                record = json.load(f)
        except (OSError, ValueError) as error:
            unreadable.append(f'{file} ({type(error).__name__}: {str(error).splitlines()[0][:80]})')
            continue
        if not isinstance(record, dict) or 'config' not in record or 'epochs' not in record:
            continue
        record['config'] = as_trained(record['config'])  # compared and shown as it trained, older records too
        name, seed = record['config']['name'], int(record['config']['seed'])
        runs.append({'label': SEED_SUFFIX.sub('', name), 'seed': seed, 'record': record, 'file': file,
                     'sweep': sweep_home_of(file)})
    if unreadable and not skip_unreadable:
        raise ResultsError(f'cannot read {plural(len(unreadable), "results file")}: {"; ".join(unreadable)}: '
                           f'mend or remove them, or leave them out with --skip_unreadable')
    if not runs:
        raise ResultsError(f'no train.py results (*.json) found in {", ".join(inputs) or "no folder"}')
    return RunList(runs, unreadable)


class RunList(list):
    """Runs as load_runs found them, with the unreadable files it left out (``unreadable``)."""

    def __init__(self, runs, unreadable=()):
        super().__init__(runs)
        self.unreadable = list(unreadable)


def split_policy(runs):
    """How the validation split of a configuration's runs was drawn: ('fixed', N) when every run used split seed N,
    ('varied', None) when each run's split seed is its trial seed (sweep.py --vary_split), else None (mixed)."""
    splits = {(int(run['seed']), int(run['record']['config'].get('split_seed', VALIDATION_SPLIT_SEED))) for run in runs}
    if len({split for _, split in splits}) == 1:
        return 'fixed', next(iter(splits))[1]
    if all(seed == split for seed, split in splits):
        return 'varied', None
    return None


def group_runs(runs):
    """{label: {seed: run}}; refuses two results for one seed, runs of one label whose experiment settings
    (experiment.experiment_settings, the seed and split seed aside) differ, and runs of one label whose validation
    splits are neither one split nor each its seed's (split_policy)."""
    groups = {}
    for run in runs:
        seeds = groups.setdefault(run['label'], {})
        if run['seed'] in seeds:
            raise ResultsError(f"two results for {run['label']} seed {run['seed']}: {seeds[run['seed']]['file']} "
                               f"and {run['file']}")
        seeds[run['seed']] = run
    for label, seeds in groups.items():
        differing = differing_settings([run['record']['config'] for run in seeds.values()], ignore=PAIRING)
        mixed = [f'{name} ({", ".join(sorted(map(comparable, values)))})' for name, values in differing.items()]
        if mixed:
            raise ResultsError(f'runs named {label} differ in {"; ".join(mixed)}: give them different names')
        if split_policy(seeds.values()) is None:
            raise ResultsError(f'runs named {label} mix validation splits (split seeds neither all equal nor each its '
                               f'seed): give them different names')
    return groups


def group_protocols(runs, may_differ=()):
    """[(sweep, protocol, {label: {seed: run}})] in the order their first run was found: the runs of one sweep (its
    home, or None for runs made outside a sweep) and one protocol (experiment.protocol, ``may_differ`` aside) grouped
    by label as group_runs does. Two sweeps are never mixed, whatever their protocols; one label may name
    configurations of several protocols, each then grouped apart."""
    by_protocol = {}
    for run in runs:
        key = (run.get('sweep'), protocol(run['record']['config'], may_differ))
        by_protocol.setdefault(key, []).append(run)
    return [(sweep, key, group_runs(members)) for (sweep, key), members in by_protocol.items()]
