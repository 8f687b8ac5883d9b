"""train.py's flags: each with its help and default, the checks that reject impossible settings, and the device.

A usage error is one line, 'train.py: error: ...', with exit status 2, before anything is written.
Each flag's role (does it define the experiment?) comes from experiment.ROLES. ``validate_args``
only checks; ``complete_args`` adds what follows from the flags (the default name and path, the
resolved device). Nothing here imports torch until a device other than the CPU is asked about (or
the default device is chosen): a sweep checks its runs' flags without it.
"""
import argparse
import math
import os
import re

from .cli import OneLineParser, UsageError, plural
from .cpu_threads import default_threads
from .experiment import ROLES
from .names import (INPUT_NORMS, NETWORK_NAMES, NORM_NAMES, PRECISION_NAMES, SCHEDULER_NAMES, TIMM, TORCHVISION,
                    TRAINABLE_DATASETS, network_problem, zoo_norm_problem)
from .protocol import DEFAULTS, FAKE_MIN_SIZE, FAKE_SIZE, VALIDATION_SPLIT_SEED, resolve_bn_weight
from .runs import DEFAULT_PATH
from .tracking import missing_package

__all__ = ['build_parser', 'parse_args', 'canonical_seed', 'given_settings', 'validate_args', 'complete_args',
           'name_problems', 'device_problem', 'resolve_device']


def build_parser(raise_errors=False):
    p = OneLineParser(prog='train.py', raise_errors=raise_errors,
                      description='Train a network with the paper\'s BN initialisation and BN-scale learning-rate '
                                  'reduction.')

    def flag(name, **kwargs):
        action = p.add_argument(name, **kwargs)
        if action.dest not in ROLES:
            raise KeyError(f'{name} has no role in experiment.ROLES: say there whether it defines the experiment')

    flag('--path', default='', help="parent folder for {dataset}/images, /networks and /results; '' means ./training/")
    flag('--name', default=None,
         help='name of the weights and results files (default: {dataset}_train_weight{bn_weight}_c{c})')
    flag('--dataset', default=DEFAULTS['dataset'], choices=TRAINABLE_DATASETS,
         help="dataset to train on; 'fake' is random CIFAR-shaped data for smoke runs and benchmarks only: "
              "its accuracies mean nothing")
    flag('--network', default=DEFAULTS['network'],
         help=f'network to train: {", ".join(NETWORK_NAMES)}; {TORCHVISION}NAME, any torchvision classification network '
              f'with batch norm (e.g. {TORCHVISION}mobilenet_v2, {TORCHVISION}efficientnet_b0, {TORCHVISION}densenet121, '
              f'{TORCHVISION}regnet_y_400mf, {TORCHVISION}vgg11_bn, {TORCHVISION}resnext50_32x4d); or {TIMM}NAME, any timm '
              f'classification model with batch norm (e.g. {TIMM}efficientnet_b0, {TIMM}mobilenetv3_small_100, '
              f'{TIMM}regnety_002; needs the timm extra; docs/your-data-and-networks.md)')
    flag('--batch_size', default=DEFAULTS['batch_size'], type=int, help='training batch size')
    flag('--num_epochs', default=DEFAULTS['num_epochs'], type=int, help='number of training epochs')
    flag('--learning_rate', default=DEFAULTS['learning_rate'], type=float, help='initial SGD learning rate')
    flag('--scheduler', default=DEFAULTS['scheduler'], choices=SCHEDULER_NAMES,
         help="'cos': cosine annealing to 1e-8, stepped once per epoch; 'none': constant rate")
    flag('--momentum', default=DEFAULTS['momentum'], type=float, help='SGD momentum')
    flag('--weight_decay', default=DEFAULTS['weight_decay'], type=float, help='weight decay on conv and linear weights')
    flag('--device', default=None, help='torch device: cpu, cuda, cuda:0, ... (default: cuda where PyTorch finds a GPU, '
                                        'else cpu)')
    flag('--bn_weight', default=DEFAULTS['bn_weight'], type=float,
         help='initial value of every BN scale (<= 0 means the standard 1.0)')
    flag('--c', default=DEFAULTS['c'], type=float,
         help='BN scales train with learning_rate / c (applied only when c > 1)')
    flag('--input_norm', default=DEFAULTS['input_norm'], choices=INPUT_NORMS,
         help="'bn': a BN layer before the network (scale bn_weight x 0.58, shift frozen at 0); "
              "'dataset': fixed per-channel mean/std of the training set")
    flag('--norm', default=DEFAULTS['norm'], choices=NORM_NAMES,
         help="every normalisation layer of the network: 'bn' (ScaleBatchNorm), 'mabn' (moving-average BN for "
              "small batches, with weight-centralised convolutions), 'none' (no normalisation)")
    flag('--mabn_real_batch', default=32, type=int,
         help='with --norm mabn: the batch MABN simulates by averaging statistics over real_batch / batch_size '
              'iterations (a multiple of --batch_size)')
    flag('--train_only_bn', action='store_true',
         help='train only the normalisation layers\' scales and shifts; every other parameter stays at its '
              'initial value (Frankle et al., 2021)')
    flag('--bn_affine', action='store_true', default=True,
         help='BN layers have a learnable scale and shift (nn.BatchNorm2d(affine=True)); the default')
    flag('--no_bn_affine', dest='bn_affine', action='store_false',
         help='BN layers without scale and shift (affine=False), instead of the default --bn_affine')
    flag('--bn_running_stats', action='store_true', default=True,
         help='BN layers keep running statistics for evaluation (track_running_stats=True); the default')
    flag('--no_bn_running_stats', dest='bn_running_stats', action='store_false',
         help='BN layers evaluate with the batch\'s own statistics (track_running_stats=False), instead of the '
              'default --bn_running_stats')
    flag('--seed', default=DEFAULTS['seed'],
         help='trial seed (an integer, hashed with MD5; the paper uses 1..15, 0 is reserved for the validation split)')
    flag('--split_seed', default=VALIDATION_SPLIT_SEED, type=int,
         help='seed of the stratified 10%% validation split (0: the paper\'s split, the same for every trial seed; '
              'sweep.py --vary_split sets it to each run\'s trial seed)')
    flag('--data_dir', default=None,
         help='folder holding the dataset files (default: {path}/{dataset}/images); with --dataset folder, the folder '
              'holding train/<class>/... and test/<class>/...')
    flag('--image_size', default=None, type=int,
         help='--dataset folder: the square size every image is resized to (shorter side, then a centre crop; '
              'default: the median shorter side of the training images)')
    flag('--cache_dir', default=None,
         help='--dataset folder: where the decoded images are cached (default: {path}/folder/cache)')
    flag('--fake_size', default=FAKE_SIZE, type=int,
         help="number of training images of --dataset fake (the test set is a fifth of it)")
    flag('--precision', default='fp32', choices=PRECISION_NAMES,
         help='arithmetic of forward and backward: fp32, or bf16/fp16 autocast (BN weights stay fp32; '
              'fp16 only on CUDA, with dynamic loss scaling on the device)')
    flag('--channels_last', action='store_true',
         help='channels-last memory layout for the network and its inputs (faster with bf16/fp16 on GPUs)')
    flag('--threads', default=None, type=int,
         help='CPU threads (default: OMP_NUM_THREADS if set, else one per core this process may use). '
              'Fixed for a run: the count changes the CPU\'s rounding; runs sharing a CPU go fastest with one '
              'single-thread run per core (sweep.py does that)')
    flag('--no_cuda_graph', action='store_true',
         help='on CUDA, run every step eagerly instead of replaying one captured CUDA graph')
    flag('--sync_bn', action='store_true',
         help='under torchrun (CUDA): BN statistics over the whole batch instead of per process')
    flag('--no_norm_statistics', action='store_true',
         help='do not record the per-layer gamma, beta and x_hat statistics of every epoch in the results JSON '
              '(they change no result; docs/norm-statistics.md)')
    flag('--tensorboard', default=None, metavar='DIR',
         help='log every epoch to TensorBoard under DIR/{name}/ (tensorboard --logdir DIR shows a sweep\'s runs side by '
              'side); needs the tracking extra (docs/tracking.md)')
    flag('--mlflow', default=None, nargs='?', const='', metavar='URI',
         help='log the run to MLflow at URI (default: MLFLOW_TRACKING_URI, else MLflow\'s own default), one MLflow run '
              'per train.py run in the experiment of its sweep (or its dataset); needs the tracking extra')
    flag('--evaluate', default=None, metavar='WEIGHTS',
         help='evaluate saved weights (a -best.pt or -last.pt) on the validation and test sets with the same data and '
              'network flags, computed as training does; trains nothing')
    flag('--resume', action='store_true',
         help='continue from {name}-last.pt (or start, if there is none); a finished run is not retrained')
    flag('--overwrite', action='store_true',
         help='train from scratch even though results or a checkpoint of this name exist, replacing them')
    flag('--change_num_epochs', action='store_true',
         help='with --resume, accept a --num_epochs different from the checkpoint\'s; the cosine schedule '
              'then decays from the current learning rate to its minimum at the new last epoch')
    return p


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def _norm_problems(args):
    """Combinations of the normalisation flags that make no sense, each as a message."""
    problems, scale = [], _finite(args.bn_weight) and resolve_bn_weight(args.bn_weight)
    if args.norm == 'none' and (scale != 1 or args.c > 1 or args.input_norm == 'bn'):
        problems.append('--norm none has no normalisation layer, so no scale to start small or to train with lr / c, '
                        'and no input BN: give --bn_weight 1 --c 1 --input_norm dataset')
    if args.norm == 'none' and args.train_only_bn:
        problems.append('--train_only_bn with --norm none would train nothing')
    if not args.bn_affine and (scale != 1 or args.c > 1 or args.train_only_bn):
        problems.append('--no_bn_affine removes the BN scale and shift: --bn_weight must be 1 and --c 1, '
                        'and --train_only_bn would train nothing')
    if args.norm != 'bn' and not (args.bn_affine and args.bn_running_stats):
        problems.append(f'--no_bn_affine and --no_bn_running_stats apply to --norm bn only, not {args.norm}')
    problem = zoo_norm_problem(args.network, args.norm, args.bn_affine, args.bn_running_stats)
    if problem:
        problems.append(problem)
    if args.norm == 'mabn':
        if args.network == 'mlp':
            problems.append('--norm mabn has no layer for the MLP\'s (N, C) features: use a ResNet')
        if args.batch_size >= 1 and (args.mabn_real_batch < 1 or args.mabn_real_batch % args.batch_size):
            problems.append(f'--mabn_real_batch {args.mabn_real_batch} must be a multiple of --batch_size '
                            f'{args.batch_size}')
    return problems


def _value_problems(args):
    """Flag values out of range, each as a message."""
    problems = []
    if args.batch_size < 1:
        problems.append(f'--batch_size must be >= 1, got {args.batch_size}')
    if args.num_epochs < 1:
        problems.append(f'--num_epochs must be >= 1, got {args.num_epochs}')
    for flag in ('learning_rate', 'weight_decay', 'c'):
        value = getattr(args, flag)
        if not _finite(value) or value < 0:
            problems.append(f'--{flag} must be a finite number >= 0, got {value}')
    if _finite(args.learning_rate) and args.learning_rate == 0:
        problems.append('--learning_rate must be > 0')
    if not _finite(args.momentum) or not 0 <= args.momentum < 1:
        problems.append(f'--momentum must be in [0, 1), got {args.momentum}')
    if not _finite(args.bn_weight):
        problems.append(f'--bn_weight must be finite, got {args.bn_weight}')
    if not re.fullmatch(r'[0-9]+', args.seed):
        problems.append(f'--seed must be an integer >= 0 in decimal digits, got {args.seed!r}')
    if args.split_seed < 0:
        problems.append(f'--split_seed must be an integer >= 0, got {args.split_seed}')
    if args.threads is not None and args.threads < 1:
        problems.append(f'--threads must be >= 1, got {args.threads}')
    problem = network_problem(args.network)
    if problem:
        problems.append(problem)
    if args.dataset == 'folder' and not args.data_dir:
        problems.append('--dataset folder needs --data_dir ROOT, the folder holding train/<class>/... and '
                        'test/<class>/...')
    if args.image_size is not None and (args.dataset != 'folder' or args.image_size < 8):
        problems.append('--image_size applies to --dataset folder only' if args.dataset != 'folder' else
                        f'--image_size must be >= 8, got {args.image_size}')
    if args.dataset == 'fake' and args.fake_size < FAKE_MIN_SIZE:
        problems.append(f'--fake_size must be >= {FAKE_MIN_SIZE} (the validation split needs every class), got '
                        f'{args.fake_size}')
    return problems


def _control_problems(args):
    """Flags that contradict each other or name no plain file, each as a message."""
    problems = []
    if args.resume and args.overwrite:
        problems.append('--resume and --overwrite contradict each other: choose one')
    if args.change_num_epochs and not args.resume:
        problems.append('--change_num_epochs only applies with --resume')
    if args.name is not None:
        problems += name_problems(args.name)
    for flag in ('path', 'data_dir'):
        if '\0' in (getattr(args, flag) or ''):
            problems.append(f'--{flag} must not contain a NUL character')
    return problems


NAME_BYTES = 200  # the longest file a run makes, '.{name}-last.pt.tmp{pid}', stays under the usual 255 bytes


def name_problems(name, flag='--name'):
    """Why ``name`` cannot name a run's files (or a sweep's folder), as messages about ``flag``."""
    if os.sep in name or name in ('.', '..') or not name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return [f'{flag} must be a plain file name (no {os.sep}, not blank, no control characters such as a '
                f'newline), got {name!r}']
    if name != name.strip():
        return [f'{flag} must not start or end with a space, got {name!r}']
    if len(name.encode('utf-8')) > NAME_BYTES:
        return [f'{flag} must be at most {NAME_BYTES} bytes long (its files add a prefix and a suffix), got '
                f'{len(name.encode("utf-8"))}']
    return []


def validate_args(args):
    """Raise UsageError naming what makes train.py's flags ``args`` impossible; changes and prints nothing."""
    problems = _value_problems(args) + _norm_problems(args) + _control_problems(args)
    if problems:
        raise UsageError('; '.join(problems))
    problem = device_problem(args.device, args.precision) or missing_package(args.tensorboard, args.mlflow)
    if problem:
        raise UsageError(problem)


def canonical_seed(seed):
    """A seed as runs record it: '01' and '1' are the same run (they hash to different seeds otherwise)."""
    return str(int(seed)) if str(seed).isdigit() else seed


def complete_args(args):
    """A copy of validated ``args`` with what follows from them: the seed in canonical form ('01' and '1' must
    hash to the same run), the device as torch names it, the thread count, and the original's default --name and --path."""
    args = argparse.Namespace(**vars(args))
    args.seed = canonical_seed(args.seed)
    args.device = str(resolve_device(args.device or default_device()))
    args.threads = args.threads or default_threads()
    if not args.name:  # the original's default name, values as Python prints them: weight0.1_c100, weight1.0_c1.0
        args.name = f'{args.dataset}_train_weight{args.bn_weight}_c{args.c}'
    args.path = args.path or DEFAULT_PATH
    if args.dataset == 'folder' and not args.cache_dir:
        args.cache_dir = os.path.join(args.path, 'folder', 'cache')
    return args


def parse_args(argv, parser=None, adjust=None):
    """train.py's flags, checked and completed; a usage error ends the program in one line (exit 2), or raises
    UsageError with a ``raise_errors`` parser. ``adjust(args)``, when given, may change the flags as parsed before
    they are checked (--evaluate takes the run's recorded settings)."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if adjust is not None:
        args = adjust(args)
    try:
        validate_args(args)
    except UsageError as error:
        parser.error(str(error))
    return complete_args(args)


def given_settings(argv):
    """The names of the settings that the command line ``argv`` sets explicitly (not by their defaults)."""
    parser = build_parser(raise_errors=True)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def device_problem(name, precision='fp32'):
    """Why ``--device name`` (None: this machine's default) with ``--precision precision`` cannot run here, or None."""
    try:
        device = resolve_device(name or default_device())
    except ValueError as error:
        return str(error)
    if precision == 'fp16' and device.type != 'cuda':
        return '--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU'
    return None


def default_device():
    import torch
    return 'cuda' if torch.cuda.is_available() else 'cpu'


class _Cpu:
    """The CPU as resolve_device gives it without importing torch: its type, and its name as torch writes it."""
    type, index = 'cpu', None

    def __str__(self):
        return 'cpu'


def resolve_device(name):
    """--device ``name`` checked on this machine: a torch.device (the CPU without importing torch), or ValueError."""
    if name == 'cpu':
        return _Cpu()
    import torch
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f'--device {name!r} is not a torch device (examples: cpu, cuda, cuda:0)') from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'--device {name} asked for CUDA, but no CUDA GPU is available; use --device cpu')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f'--device {name}: only {plural(torch.cuda.device_count(), "CUDA device")} present')
    elif device.type == 'meta':
        raise ValueError(f'--device {name} holds no data (it only tracks shapes): train on cpu or cuda')
    elif device.type != 'cpu':
        try:
            torch.ones(1, device=device).add(1).cpu()  # a device that stores and computes, here
        except Exception:
            raise ValueError(f'--device {name} is not available on this machine') from None
    return device
