"""Revisiting Batch Norm Initialization (Davis & Frank, ECCV 2022): the library behind train.py, sweep.py and report.py.

    from revisiting_bn import ScaleBatchNorm2d, construct_network, adjust_weight_decay_and_learning_rate, evaluate

The names below load their module on first use, so ``from revisiting_bn import evaluate`` (the
t-test) imports neither torch nor the training code.
"""
import importlib

__version__ = '1.0.0'

# name -> the module of this package that defines it
_HOMES = {
    'ScaleBatchNorm1d': 'batch_norm', 'ScaleBatchNorm2d': 'batch_norm', 'ScaleBatchNorm3d': 'batch_norm',
    'convert_to_scale_batch_norm': 'batch_norm', 'to_plain_batch_norm': 'batch_norm', 'MABN2d': 'batch_norm',
    'resolve_bn_weight': 'protocol', 'construct_network': 'networks',
    'adjust_weight_decay_and_learning_rate': 'weight_decay_and_learning_rate',
    'make_complex': 'seeds', 'make_deterministic': 'seeds', 'evaluate': 't_test',
}
__all__ = list(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{_HOMES[name]}', __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
