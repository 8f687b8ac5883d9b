"""What a run is: the role of each of train.py's settings, the configuration a run records, and "same experiment?".

Every setting has one role. An experiment setting defines the result: a resume, a sweep and a
report refuse to mix runs that differ in one. A place setting says where the files and the
computation go and may change between sessions of one run. A control setting says how this
session starts and is not recorded. train.py's parser takes each flag's role from ``ROLES`` and
refuses a flag that has none, so a new flag cannot be left out of the rule. Nothing here imports torch.
"""
__all__ = ['EXPERIMENT', 'PLACE', 'CONTROL', 'ROLES', 'METHOD', 'experiment_settings', 'protocol_settings', 'protocol',
           'comparable', 'differing_settings', 'setting_differences', 'run_config']

EXPERIMENT, PLACE, CONTROL = 'experiment', 'place', 'control'

# Every train.py setting (its flag without '--'), in the order of --help.
ROLES = {
    'path': PLACE, 'name': PLACE, 'dataset': EXPERIMENT, 'network': EXPERIMENT, 'batch_size': EXPERIMENT,
    'num_epochs': EXPERIMENT, 'learning_rate': EXPERIMENT, 'scheduler': EXPERIMENT, 'momentum': EXPERIMENT,
    'weight_decay': EXPERIMENT, 'device': PLACE, 'bn_weight': EXPERIMENT, 'c': EXPERIMENT,
    'input_norm': EXPERIMENT, 'norm': EXPERIMENT, 'mabn_real_batch': EXPERIMENT, 'train_only_bn': EXPERIMENT,
    'bn_affine': EXPERIMENT, 'bn_running_stats': EXPERIMENT, 'seed': EXPERIMENT, 'data_dir': PLACE,
    'image_size': EXPERIMENT, 'cache_dir': PLACE, 'fake_size': EXPERIMENT, 'precision': EXPERIMENT,
    'channels_last': EXPERIMENT, 'threads': PLACE, 'no_cuda_graph': PLACE, 'sync_bn': EXPERIMENT,
    'no_norm_statistics': PLACE, 'evaluate': CONTROL, 'resume': CONTROL, 'overwrite': CONTROL,
    'change_num_epochs': CONTROL,
}


# The method's own settings: what a configuration may change and still be tested against the baseline of its protocol.
METHOD = ('bn_weight', 'c', 'input_norm', 'norm', 'mabn_real_batch', 'train_only_bn', 'bn_affine', 'bn_running_stats')


def experiment_settings():
    """The settings (by name) that define an experiment, in --help's order."""
    return tuple(name for name, role in ROLES.items() if role == EXPERIMENT)


def protocol_settings(may_differ=()):
    """The experiment settings two configurations must share to be compared (like against like): all but the
    method's own (METHOD), the seed (which pairs their runs), and the settings ``may_differ`` names."""
    return tuple(name for name in experiment_settings() if name not in (*METHOD, 'seed', *may_differ))


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
    every experiment setting (outside ``ignore``) on which the run configurations ``configs`` differ."""
    differing = {}
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
    """The configuration a run records: every setting (a dict, or train.py's parsed flags) but the control ones."""
    settings = settings if isinstance(settings, dict) else vars(settings)
    return {key: value for key, value in settings.items() if ROLES.get(key) != CONTROL}
