"""What a run is: the role of each of train.py's settings, the configuration a run records, and "same experiment?".

Every setting has one role. An experiment setting defines the result: a resume, a sweep and a
report refuse to mix runs that differ in one. A place setting says where the files and the
computation go and may change between sessions of one run. A control setting says how this
session starts and is not recorded. train.py's parser takes each flag's role from ``ROLES`` and
refuses a flag that has none, so a new flag cannot be left out of the rule.

Settings are recorded and compared as they train (``as_trained``): the protocol replaces
--bn_weight <= 0 with 1.0 and --c <= 1 with 1 (no reduction), so --bn_weight -1, 0 and 1 are one
network's scale; what was given is kept beside it under 'given'. The input BN's initial scale
(bn_weight x 0.58 as given, <= 0 meaning 1.0) is recorded too, since --bn_weight -1 and 1 start it
apart. Nothing here imports torch.
"""
import ast

from .protocol import INPUT_BN_FACTOR, VALIDATION_SPLIT_SEED, resolve_bn_weight

__all__ = ['EXPERIMENT', 'PLACE', 'CONTROL', 'ROLES', 'METHOD', 'TRAINED', 'PAIRING', 'experiment_settings', 'protocol_settings',
           'protocol', 'comparable', 'shown', 'as_trained', 'as_given', 'replaced', 'differing_settings', 'setting_differences',
           'run_config']

EXPERIMENT, PLACE, CONTROL = 'experiment', 'place', 'control'

# Every train.py setting (its flag without '--'), in the order of --help.
ROLES = {
    'path': PLACE, 'name': PLACE, 'dataset': EXPERIMENT, 'network': EXPERIMENT, 'batch_size': EXPERIMENT,
    'num_epochs': EXPERIMENT, 'learning_rate': EXPERIMENT, 'scheduler': EXPERIMENT, 'momentum': EXPERIMENT,
    'weight_decay': EXPERIMENT, 'device': PLACE, 'bn_weight': EXPERIMENT, 'c': EXPERIMENT,
    'input_norm': EXPERIMENT, 'norm': EXPERIMENT, 'mabn_real_batch': EXPERIMENT, 'train_only_bn': EXPERIMENT,
    'bn_affine': EXPERIMENT, 'bn_running_stats': EXPERIMENT, 'seed': EXPERIMENT, 'split_seed': EXPERIMENT,
    'data_dir': PLACE,
    'image_size': EXPERIMENT, 'cache_dir': PLACE, 'fake_size': EXPERIMENT, 'precision': EXPERIMENT,
    'channels_last': EXPERIMENT, 'threads': PLACE, 'no_cuda_graph': PLACE, 'sync_bn': EXPERIMENT,
    'no_norm_statistics': PLACE, 'tensorboard': PLACE, 'mlflow': PLACE, 'evaluate': CONTROL, 'resume': CONTROL, 'overwrite': CONTROL,
    'change_num_epochs': CONTROL,
}


# The method's own settings: what a configuration may change and still be tested against the baseline of its protocol.
METHOD = ('bn_weight', 'c', 'input_norm', 'norm', 'mabn_real_batch', 'train_only_bn', 'bn_affine', 'bn_running_stats')


# What the protocol derives from the flags and records as an experiment setting beside them.
TRAINED = ('input_bn_weight',)
# What tells the runs of one configuration apart and pairs them with the baseline's: the trial seed, and the
# validation split's seed (fixed for a protocol, or varied with the trial seed: results.split_policy).
PAIRING = ('seed', 'split_seed')


def experiment_settings():
    """The settings (by name) that define an experiment, in --help's order, then the derived ones (TRAINED)."""
    return tuple(name for name, role in ROLES.items() if role == EXPERIMENT) + TRAINED


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value):
    """A protocol setting's value (as ``comparable`` wrote it) as a reader writes it: 3, resnet18, 0.1."""
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    return f'{value:g}' if isinstance(value, float) else str(value)


def as_trained(config):
    """A copy of a run configuration (a dict, or train.py's parsed flags) with the values that train: bn_weight <= 0
    as 1.0, c <= 1 as 1.0, and 'input_bn_weight', the input BN's initial scale (None without one); a value that the
    protocol replaced is kept under 'given'. A configuration recorded so already, or by an older train.py, comes
    out the same."""
    config = dict(config if isinstance(config, dict) else vars(config))
    config.setdefault('split_seed', VALIDATION_SPLIT_SEED)  # runs recorded before the split had its own seed
    given = {**config.get('given', {})}
    raw = given.get('bn_weight', config.get('bn_weight'))
    if _number(raw):
        config['bn_weight'] = resolve_bn_weight(raw)
        config['input_bn_weight'] = resolve_bn_weight(raw * INPUT_BN_FACTOR) if config.get('input_norm') == 'bn' \
            and config.get('bn_affine', True) else None
        if config['bn_weight'] != raw:
            given['bn_weight'] = raw
    raw_c = given.get('c', config.get('c'))
    if _number(raw_c) and raw_c <= 1 and raw_c != 1:
        config['c'], given['c'] = 1.0, raw_c
    if given:
        config['given'] = given
    return config


def as_given(config):
    """A recorded configuration with the flags as they were given (what --evaluate rebuilds the network from)."""
    config = dict(config)
    config.update(config.pop('given', {}))
    config.pop('input_bn_weight', None)
    return config


def replaced(settings):
    """One line per value that the protocol replaces in ``settings`` (train.py's flags), saying what trains."""
    trained, lines = as_trained(settings), []
    for name, given in trained.get('given', {}).items():
        rule = 'bn_weight <= 0 means the standard 1.0, as in the original code' if name == 'bn_weight' else \
            'c <= 1 means no learning-rate reduction'
        input_bn = f'; the input BN starts at {trained["input_bn_weight"]:g}' if name == 'bn_weight' and \
            trained.get('input_bn_weight') is not None else ''
        lines.append(f'NOTE: --{name} {given:g} trains as {name} {trained[name]:g} ({rule}{input_bn}): recorded as '
                     f'{name} {trained[name]:g}, the given {given:g} kept beside it')
    return lines


def protocol_settings(may_differ=()):
    """The experiment settings two configurations must share to be compared (like against like): all but the
    method's own (METHOD), the seed (which pairs their runs), and the settings ``may_differ`` names."""
    return tuple(name for name in experiment_settings() if name not in (*METHOD, *TRAINED, *PAIRING, *may_differ))


def protocol(config, may_differ=()):
    """A run configuration's protocol: ((setting, value), ...) of its protocol settings, numbers by value, and the
    data folder of a folder dataset (two folders are two datasets). Equal protocols may be compared."""
    key = tuple((name, comparable(config.get(name))) for name in protocol_settings(may_differ))
    if config.get('dataset') == 'folder':
        key += (('data_dir', comparable(config.get('data_dir'))),)
    return key


def comparable(value):
    """A setting's value as compared and listed: numbers by value (a default c of 100 equals --c 100.0)."""
    return repr(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value)


def differing_settings(configs, ignore=()):
    """The one answer to "are these the same experiment?": {setting: its distinct values, in order met} for
    every experiment setting (outside ``ignore``) on which the run configurations ``configs`` differ, compared as
    they train (as_trained)."""
    differing, configs = {}, [as_trained(config) for config in configs]
    for name in experiment_settings():
        if name not in ignore:
            values = {}
            for config in configs:
                values.setdefault(comparable(config.get(name)), config.get(name))
            if len(values) > 1:
                differing[name] = list(values.values())
    return differing


def setting_differences(saved, current, ignore=()):
    """'name: saved -> current' for every experiment setting (outside ``ignore``) that differs."""
    return [f'{name}: {saved!r} -> {now!r}' for name, (saved, now) in
            differing_settings([saved, current], ignore).items()]


def run_config(settings):
    """The configuration a run records: every setting (a dict, or train.py's parsed flags) but the control ones, as
    it trains (as_trained)."""
    return {key: value for key, value in as_trained(settings).items() if ROLES.get(key) != CONTROL}
