"""The names a user picks among, and what a name asks for: datasets, networks, normalisations, schedules, precisions.

Each registry that builds what a name stands for (data.DATASETS, networks.NETWORKS,
batch_norm.NORMS, weight_decay_and_learning_rate.SCHEDULERS, engine.PRECISIONS) is keyed by the
names given here, so train.py's flags and a sweep's plan are checked without importing torch
(torchvision and timm are imported only to check a tv: or timm: name).
"""
import importlib.util

__all__ = ['TRAINABLE_DATASETS', 'RESNETS', 'CIFAR_RESNET_DEPTHS', 'NETWORK_NAMES', 'NORM_NAMES', 'SCHEDULER_NAMES',
           'PRECISION_NAMES', 'INPUT_NORMS', 'TORCHVISION', 'TIMM', 'ZOOS', 'TIMM_INSTALL', 'torchvision_classifiers',
           'network_problem', 'zoo_norm_problem']

TRAINABLE_DATASETS = ('cifar10', 'cifar100', 'fashionmnist', 'fake', 'folder')
RESNETS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')  # torchvision's, as the paper's code
CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)  # He et al.'s CIFAR ResNets, 6n + 2 layers
NETWORK_NAMES = (*RESNETS, *(f'resnet{depth}' for depth in CIFAR_RESNET_DEPTHS), 'mlp')
NORM_NAMES = ('bn', 'mabn', 'none')
SCHEDULER_NAMES = ('cos', 'none')
PRECISION_NAMES = ('fp32', 'bf16', 'fp16')
INPUT_NORMS = ('bn', 'dataset')

TORCHVISION = 'tv:'  # the family of every torchvision classification network with batch norm: tv:NAME
TIMM = 'timm:'  # the family of every timm classification model with batch norm: timm:NAME
ZOOS = (TORCHVISION, TIMM)  # networks of a model zoo: built by their library, their BN layers given the method's start
TIMM_INSTALL = "pip install 'revisiting-bn[timm]' (or: pip install -r requirements-timm.txt)"


def torchvision_classifiers():
    import torchvision
    return torchvision.models.list_models(module=torchvision.models)


def network_problem(name):
    """Why --network ``name`` names no network here, or None."""
    if name in NETWORK_NAMES:
        return None
    if name.startswith(TORCHVISION):
        if name[len(TORCHVISION):] in torchvision_classifiers():
            return None
        return (f'unknown network {name!r}: torchvision has no classification network {name[len(TORCHVISION):]!r} '
                f'(torchvision.models.list_models() lists them)')
    if name.startswith(TIMM):
        if importlib.util.find_spec('timm') is None:
            return f'--network {name} needs timm: {TIMM_INSTALL}'
        import timm
        if timm.is_model(name[len(TIMM):]):
            return None
        return f'unknown network {name!r}: timm has no model {name[len(TIMM):]!r} (timm.list_models() lists them)'
    return (f'unknown network {name!r}; choose one of {", ".join(NETWORK_NAMES)}, or {TORCHVISION}NAME for a '
            f'torchvision network, {TIMM}NAME for a timm model')


def zoo_norm_problem(network_name, norm='bn', affine=True, track_running_stats=True):
    """Why a ``tv:`` or ``timm:`` network cannot take these normalisation settings, or None (also None for this
    repository's networks)."""
    if network_name.startswith(ZOOS) and (norm != 'bn' or not (affine and track_running_stats)):
        return (f'{network_name} keeps its own BN layers\' settings: --norm mabn/none, --no_bn_affine and '
                f'--no_bn_running_stats apply to this repository\'s networks')
    return None
