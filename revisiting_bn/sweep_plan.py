"""A sweep's plan: its configurations (built in, your own, a grid), its home, every run's flags, checked with its data.

A sweep is every configuration x every seed, each run ``train.py ... --name {configuration}_seed{seed}
--seed {seed} --resume`` with --path the sweep's home, PATH/NAME: NAME is --sweep, or else made
from what sets the sweep's protocol apart from the paper's (its dataset, network, and every other
protocol setting that differs from train.py's default, e.g. fashionmnist-mlp-num_epochs2), so that
sweeps of different protocols never share a folder and the same command finds the same runs again.
Everything is checked before anything runs or is submitted: every run's flags by train.py's own
parser, two configurations that would train the same network, runs whose files hold another
experiment, and, once per dataset folder, that the data is there and readable.
"""
import hashlib
import itertools
import json
import os
import re
import shlex
import time
from dataclasses import dataclass

from . import flags as train_flags
from .cli import USAGE, RunError, UsageError, plural
from .data_files import data_folder, data_problem, fetch_dataset, train_labels
from .experiment import comparable, differing_settings, protocol_settings, run_config
from .lifecycle import sweep_state
from .protocol import VALIDATION_SPLIT_SEED
from .runs import output_paths, sweep_files, write_text

__all__ = ['STANDARD', 'BUILT_IN', 'DEFAULT_CONFIGS', 'SWEEP_CONTROLLED', 'SweepError', 'parse_seeds', 'flag_list',
           'grid_configurations', 'configurations', 'Plan', 'make_plan', 'sweep_name', 'data_lines', 'fetch_data',
           'run_datasets', 'draw_splits', 'write_manifest', 'describe_plan', 'prepare_tracking']

STANDARD = ['--bn_weight', '1', '--c', '1', '--input_norm', 'dataset']
BUILT_IN = {  # the paper's pair (run by default), then the related BN systems' comparisons (run when named)
    'baseline': STANDARD,
    'proposed': ['--bn_weight', '0.1', '--c', '100', '--input_norm', 'bn'],
    'no_bn': ['--norm', 'none', *STANDARD],                          # vs baseline: an MLP with and without BN
    'bn_only': ['--train_only_bn', *STANDARD],                       # BN-only training (Frankle et al.)
    'bn_only_small_init': ['--train_only_bn', '--bn_weight', '0.1', '--c', '1', '--input_norm', 'bn'],  # vs bn_only
    'mabn': ['--norm', 'mabn', *STANDARD],                           # vs baseline at a small batch (Yan et al.)
}
DEFAULT_CONFIGS = ('baseline', 'proposed')
SWEEP_CONTROLLED = ('--name', '--seed', '--path', '--resume', '--overwrite', '--device', '--threads')
NAME_LENGTH = 80  # a longer default sweep name is cut and ends with a hash of the whole


class SweepError(RunError):
    """A sweep that cannot be planned as asked (exit status 2)."""

    def __init__(self, message, status=USAGE):
        super().__init__(message, status)


def parse_seeds(text):
    """'1-15', '1,3,5' or '1-3,7' -> sorted unique seeds."""
    seeds = set()
    for part in text.split(','):
        low, _, high = part.partition('-')
        if not re.fullmatch(r'[0-9]+', low) or not re.fullmatch(r'[0-9]*', high):
            raise SweepError(f'--seeds {text!r}: use a range like 1-15 or a list like 1,3,5 (decimal digits only)')
        if high and int(high) < int(low):
            raise SweepError(f'--seeds {text!r}: the range {part} is reversed; write {high}-{low}')
        seeds.update(range(int(low), int(high or low) + 1))
    return sorted(seeds)


def flag_list(value):
    """A configuration's flags: a string of train.py flags, or a {flag: value} mapping."""
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, dict):
        return [item for key, v in value.items() for item in (f'--{key.lstrip("-")}', str(v))]
    raise SweepError(f'a configuration must be a string of flags or a mapping, got {value!r}')


def _own_name(name, where):
    """A user's configuration may not take a built-in one's name: its runs would be named, found and paired as
    that configuration's."""
    if name in BUILT_IN:
        raise SweepError(f'{where} {name}: {name!r} is built in ({shlex.join(BUILT_IN[name])}); give your '
                         f'configuration another name')
    return name


def _grid_axes(grid):
    axes = []
    for item in grid:
        flag, sep, values = item.partition('=')
        flag = flag.strip().lstrip('-')
        values = [value.strip() for value in values.split(',') if value.strip()]
        if not sep or not re.fullmatch(r'[a-z_]+', flag) or not values:
            raise SweepError(f"--grid {item!r}: use FLAG=VALUE,VALUE,... (a train.py flag without '--')")
        if flag in (name for name, _ in axes):
            raise SweepError(f'--grid {flag} is given twice: give its values once, comma-separated')
        if len(set(values)) < len(values):
            raise SweepError(f'--grid {item!r}: a value is given twice')
        axes.append((flag, values))
    return axes


def grid_configurations(grid, base):
    """--grid FLAG=V1,V2,... (repeatable) crossed into configurations on top of ``base`` (flags), each named from
    its values in the order given: --grid bn_weight=0.1,1 --grid c=1,100 gives bn_weight0.1_c1, ... bn_weight1_c100."""
    axes, configs = _grid_axes(grid), {}
    for combination in itertools.product(*(values for _, values in axes)):
        name = '_'.join(f'{flag}{value}' for (flag, _), value in zip(axes, combination))
        configs[name] = [*base, *(item for (flag, _), value in zip(axes, combination)
                                  for item in (f'--{flag}', value))]
    return configs


def _configs_from_file(path):
    try:
        with open(path) as f:
            loaded = json.load(f)
    except (OSError, ValueError) as error:
        raise SweepError(f'--config_file {path}: {error}') from None
    if not isinstance(loaded, dict):
        raise SweepError(f'--config_file {path}: expected a JSON object {{name: flags}}')
    return {_own_name(name, '--config_file'): flag_list(flags) for name, flags in loaded.items()}


def configurations(args):
    """{configuration: its train.py flags} that the sweep runs, in order: --configs, or the default pair (or the
    baseline and the grid) and the user's own."""
    configs = dict(BUILT_IN)
    if args.config_file:
        configs.update(_configs_from_file(args.config_file))
    for item in args.config:
        name, sep, flags = item.partition('=')
        if not sep or not name.strip():
            raise SweepError(f"--config {item!r}: use NAME='--flag value ...'")
        configs[_own_name(name.strip(), '--config')] = flag_list(flags)
    if args.grid:
        base = flag_list(args.grid_base) if args.grid_base is not None else BUILT_IN['proposed']
        grid = grid_configurations(args.grid, base)
        configs.update({_own_name(name, '--grid'): flags for name, flags in grid.items()})
        default = ['baseline', *grid, *(name for name in configs if name not in BUILT_IN and name not in grid)]
    else:
        default = [*DEFAULT_CONFIGS, *(name for name in configs if name not in BUILT_IN)]
    chosen = args.configs or default
    unknown = [name for name in chosen if name not in configs]
    if unknown:
        raise SweepError(f'unknown configuration(s) {", ".join(unknown)}; defined: {", ".join(configs)}')
    for name in chosen:
        if not re.fullmatch(r'[A-Za-z0-9_.-]+', name) or name.startswith('.'):
            raise SweepError(f'configuration name {name!r}: use letters, digits, ., - and _')
    return {name: configs[name] for name in chosen}


@dataclass
class Plan:
    """A sweep ready to run: its name and home (runs.sweep_files), its configurations ({name: train.py flags}), every
    run (config, seed, name, argv, settings, paths, state), and the data folders its runs read ({(dataset, folder):
    problem or None})."""
    name: str
    files: dict
    configs: dict
    runs: list
    data: dict

    @property
    def home(self):
        return self.files['home']


def _checked_flags(argv, parser):
    try:
        return train_flags.parse_args(argv, parser)
    except UsageError as error:
        raise SweepError(f'train.py flags: {error}') from None


def _data_flags(settings, path):
    """The --data_dir every run of a configuration gets: its own, or PATH/DATASET/images shared by every sweep under
    --path (Debian's Fashion-MNIST where that folder lacks it); none for data without files (fake)."""
    dataset, given = settings['dataset'], settings.get('data_dir')
    if dataset == 'fake':
        return [], None
    folder, _ = data_folder(dataset, given or os.path.join(path, dataset, 'images'), given=bool(given))
    return ([] if given else ['--data_dir', folder]), folder


def _refuse_twins(settings):
    """Two configurations that would train the same network (--bn_weight -1 and 0, --c 0.5 and 1, or the same flags
    twice) are one configuration run twice: refused, naming them."""
    names = list(settings)
    for i, config in enumerate(names):
        twin = next((other for other in names[:i] if not differing_settings([settings[other], settings[config]])), None)
        if twin:
            raise SweepError(f'configurations {twin} and {config} train the same network (--bn_weight <= 0 means 1.0, '
                             f'--c <= 1 means no reduction): keep one')


def make_plan(args, common, device='cpu', threads=1):
    """The sweep of sweep.py's ``args`` with train.py flags ``common`` for every run, each run checked by train.py's
    own parser for the kind of device it will get ('cpu' or 'cuda') and given ``threads`` CPU threads."""
    configs = configurations(args)
    controlled = SWEEP_CONTROLLED + (('--split_seed',) if args.vary_split else ())
    for flag in common + [f for flags in configs.values() for f in flags]:
        if flag.split('=')[0] in controlled:
            own = ' (sweep.py\'s own --threads, before --, sets it)' if flag.startswith('--threads') else \
                ' (--vary_split sets it to each run\'s seed)' if flag.startswith('--split_seed') else ''
            raise SweepError(f'{flag} is set by the sweep for every run; leave it out{own}')
    parser = train_flags.build_parser(raise_errors=True)
    seeds = parse_seeds(args.seeds)
    settings = {config: run_config(_checked_flags([*common, *flags, '--device', device, '--threads', str(threads)],
                                                  parser)) for config, flags in configs.items()}
    _refuse_twins(settings)
    name = args.sweep or sweep_name(list(settings.values()), vars(train_flags.build_parser().parse_args([])),
                                    args.vary_split)
    files = sweep_files(os.path.join(args.path, name))
    runs, data = [], {}
    for config, flags in configs.items():
        extra, folder = _data_flags(settings[config], args.path)
        if folder is not None:
            data.setdefault((settings[config]['dataset'], folder), None)
        for seed in seeds:
            split = ['--split_seed', str(seed)] if args.vary_split else []
            argv = [*common, *flags, *extra, '--name', f'{config}_seed{seed}', '--seed', str(seed), *split, '--path',
                    files['home'], '--threads', str(threads), '--resume']
            runs.append(_planned_run(config, seed, argv, device, parser))
    if args.task_index is not None:
        if not 0 <= args.task_index < len(runs):
            raise SweepError(f'--task_index {args.task_index}: the sweep has runs 0..{len(runs) - 1}')
        runs = [runs[args.task_index]]
    return Plan(name, files, {config: [*common, *flags] for config, flags in configs.items()}, runs,
                {key: data_problem(*key) for key in data})


def _planned_run(config, seed, argv, device, parser):
    parsed = _checked_flags(argv + ['--device', device], parser)
    run = {'config': config, 'seed': seed, 'name': parsed.name, 'argv': argv, 'settings': run_config(parsed),
           'paths': output_paths(parsed.path, parsed.dataset, parsed.name, parsed.data_dir)}
    try:
        run['state'] = sweep_state(run['name'], run['settings'], run['paths'])
    except RunError as error:
        raise SweepError(str(error)) from None
    if run['state'] == 'restart':  # results that cannot be resumed: the run starts again
        run['argv'] = [flag for flag in argv if flag != '--resume'] + ['--overwrite']
    return run


def _part(value):
    """A setting's value as part of a folder name: 0.1, resnet18, tv-mobilenet_v2."""
    if isinstance(value, float):
        value = f'{value:g}'
    return re.sub(r'[^A-Za-z0-9_.+]+', '-', str(value)).strip('-')


def sweep_name(settings, defaults, vary_split=False):
    """The default name of a sweep of runs with ``settings`` (their run configurations): its dataset and network, then
    every protocol setting the runs share that differs from train.py's ``defaults``, then the validation split where it
    is not the paper's (split_varied, or split_seed5), e.g. fashionmnist-mlp-num_epochs2; a folder of images is named
    by its folder (and a hash of its full path)."""
    def shared(name):
        values = {comparable(s.get(name)): s.get(name) for s in settings}
        return '+'.join(_part(v) for v in values.values())
    first = settings[0]
    parts = [shared('dataset'), shared('network')]
    if first['dataset'] == 'folder':
        folder = os.path.abspath(first['data_dir'])
        parts[0] = f"folder-{_part(os.path.basename(folder))}-{hashlib.sha1(folder.encode()).hexdigest()[:6]}"
    for name in protocol_settings():
        values = {comparable(s.get(name)) for s in settings}
        if name in ('dataset', 'network') or len(values) > 1 or values == {comparable(defaults.get(name))}:
            continue
        value = first.get(name)
        parts.append(name if value is True else f'{name}{_part(value)}')
    splits = {s.get('split_seed', defaults.get('split_seed')) for s in settings}
    if vary_split:
        parts.append('split_varied')
    elif len(splits) == 1 and splits != {defaults.get('split_seed')}:
        parts.append(f'split_seed{splits.pop()}')
    name = '-'.join(parts)
    if len(name) > NAME_LENGTH:
        name = f'{name[:NAME_LENGTH - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}'
    return name


def data_lines(plan):
    """The data of a sweep in words, a line per folder: there, or why not."""
    return [f'data: {dataset} in {folder}: ' + ('there' if problem is None else
                                                  f'NOT THERE ({problem}); the sweep downloads it once before any run '
                                                  f'starts, or stops if it cannot')
            for (dataset, folder), problem in plan.data.items()]


def prepare_tracking(plan):
    """Before the runs start: with --mlflow, MLflow's store and the sweep's experiment (named as the sweep), made once."""
    uris = {run['settings'].get('mlflow') for run in plan.runs} - {None}
    for uri in sorted(uris):
        from .tracking import prepare_mlflow
        prepare_mlflow(uri, plan.name)


def fetch_data(plan, log=print):
    """Make every data folder of the sweep readable before any run starts: missing files downloaded once (not by each
    run at once); a DatasetError, one line naming the data and how to get it, where that fails."""
    for (dataset, folder), problem in plan.data.items():
        if problem is not None:
            log(f'data: {dataset} is not in {folder}: downloading it once for every run', flush=True)
            fetch_dataset(dataset, folder)
            plan.data[(dataset, folder)] = None


def run_datasets(runs):
    """{(dataset, the folder it is read from)} of ``runs``."""
    return {(run['settings']['dataset'], run['paths']['images']) for run in runs}


def draw_splits(runs):
    """Every validation split that ``runs`` use, drawn once here and kept (split.draw_split): no run then imports
    scikit-learn for it, nor do runs starting together each draw the same split. Data that cannot be read is left to
    its runs, which say why."""
    from .split import draw_split  # NumPy: not for a dry run
    wanted = {}
    for run in runs:
        wanted.setdefault((run['settings']['dataset'], run['paths']['images']), set()).add(
            run['settings'].get('split_seed', VALIDATION_SPLIT_SEED))
    for (dataset, folder), seeds in sorted(wanted.items()):
        try:
            labels = train_labels(dataset, folder)
            for seed in sorted(seeds) if labels is not None else ():
                draw_split(labels, seed)
        except (RunError, OSError, ValueError):
            continue


def write_manifest(plan, command):
    """The sweep's home and its manifest (what makes the folder a sweep's home), with every command that ran it."""
    os.makedirs(plan.home, exist_ok=True)
    try:
        with open(plan.files['manifest']) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        manifest = {'sweep': plan.name, 'created': time.strftime('%Y-%m-%d %H:%M:%S'), 'commands': []}
    configs = {config: shlex.join(flags) for config, flags in plan.configs.items()}
    manifest.update(configurations={**manifest.get('configurations', {}), **configs},
                    seeds=sorted({*manifest.get('seeds', []), *(run['seed'] for run in plan.runs)}))
    manifest['commands'] = [*manifest.get('commands', []), {'at': time.strftime('%Y-%m-%d %H:%M:%S'),
                                                            'command': shlex.join(command)}]
    write_text(plan.files['manifest'], json.dumps(manifest, indent=1) + '\n')


def describe_plan(plan, slots, threads):
    """The sweep in one line: its runs, how many are finished, where and how they train."""
    states = [run['state'] for run in plan.runs]
    return (f'{plural(len(plan.runs), "run")}, {states.count("finished")} finished; {len(slots)} at a time on '
            f'{slots[0][0]}, {plural(threads, "thread")} each')
