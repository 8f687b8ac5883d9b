"""Which torchvision networks and timm models lose the signal at the start with every BN scale at --bn_weight, and why.

    python benchmarks/vanishing_signal.py --data_dir /usr/share/datasets/fashion-mnist --json out.json
    python benchmarks/vanishing_signal.py --zoo timm --max_params 10e6 --data_dir ... --json out_timm.json

Each torchvision classification network (or timm classification model, --zoo timm: those with batch norm and at
most --max_params parameters) is built as train.py builds it (tv:NAME or timm:NAME, every BN layer's scale at
bn_weight, timm's BatchNormAct2d included), and measured once before any training, as train.py does at epoch 0: on one batch of
real images (Fashion-MNIST, resized, grey repeated into colour, normalised by its mean and std), every BN layer's
x_hat from the batch's own statistics. A layer whose x_hat has an RMS under 0.5 normalises an input whose variance
is below a third of its eps: what it passes on is mostly eps's doing, not the signal (train.py warns about it).
Each network is measured at the given bn_weight, at 1, and at the given bn_weight with every BN's eps set to 1e-5
(torchvision's default; some families use 1e-3): where the count falls to 0 with the smaller eps, eps is the cause.
"""
import functools
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY)  # this checkout's revisiting_bn, from any folder

from revisiting_bn.cli import OneLineParser, exit_on_error  # noqa: E402
from revisiting_bn.data import DatasetInfo, load_dataset  # noqa: E402
from revisiting_bn.networks import TIMM, TORCHVISION, construct_network, torchvision_classifiers  # noqa: E402
from revisiting_bn.norm_statistics import VANISHING_XHAT_RMS, NormStatistics, signal_warnings  # noqa: E402


def images(data_dir, count, size):
    """The batch every network is measured on, a copy of its own (a network may write into its input)."""
    return _images(data_dir, count, size).clone()


@functools.lru_cache(maxsize=None)
def _images(data_dir, count, size):
    data = load_dataset('fashionmnist', data_dir, download=False)  # once per size, not once per network
    batch = data.test_images[:count].float().div(255)
    batch = F.interpolate(batch, size=(size, size), mode='bilinear', align_corners=False).repeat(1, 3, 1, 1)
    return (batch - batch.mean()) / batch.std()


def build(name, batch, bn_weight, eps=None):
    torch.manual_seed(0)
    network = construct_network(name, 10, DatasetInfo(3, batch.shape[-1], 10), bn_weight, 'dataset')
    if eps is not None:
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eps = eps
    return network, NormStatistics(network, batch).measure(batch_statistics=True)


def measure(name, batch, bn_weight, eps=None):
    network, stats = build(name, batch, bn_weight, eps)
    layers = list(stats.values())
    vanished = [n for n, s in stats.items() if s['xhat_rms'] < VANISHING_XHAT_RMS]
    with torch.no_grad():
        logits = _train_mode_logits(network, batch)
    warnings = signal_warnings(list(stats), {'epoch': 0, 'statistics': 'batch', 'layers': stats})
    return {'layers': len(layers), 'vanished': len(vanished), 'first_vanished': vanished[0] if vanished else None,
            'train_py_warns': any(w['kind'] == 'vanishing' for w in warnings),
            'last_output_rms': layers[-1]['output_rms'], 'logits_std': logits.std().item(),
            'eps': sorted({m.eps for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})}


def _train_mode_logits(network, batch):
    """The logits with every BN on the batch's statistics (as training computes them), nothing else changed."""
    saved = [(buffer, buffer.clone()) for buffer in network.buffers()]
    network.eval()
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.train()
    try:
        return network(batch)
    finally:
        for buffer, value in saved:
            buffer.copy_(value)
        network.eval()


def timm_models(max_params):
    """timm's classification models with batch norm and at most ``max_params`` parameters, counted on the meta device
    (no memory, no initialisation), and {name: why} for those timm cannot build with num_classes alone."""
    import warnings

    import timm
    found, unbuilt = [], {}
    for name in timm.list_models():
        with warnings.catch_warnings(), torch.device('meta'):
            warnings.simplefilter('ignore')
            try:
                model = timm.create_model(name, pretrained=False, num_classes=10)
            except Exception as error:  # a model that needs arguments beyond num_classes: named, not measured
                unbuilt[name] = f'{type(error).__name__}: {str(error).splitlines()[0][:100] if str(error) else ""}'
                continue
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()) and \
                sum(p.numel() for p in model.parameters()) <= max_params:
            found.append(name)
    return found, unbuilt


def figure(name, batch, bn_weight, path):
    """x_hat's RMS layer by layer at the start (batch statistics), at bn_weight, at 1, and at bn_weight with eps 1e-5."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for label, weight, eps in ((f'bn_weight {bn_weight:g}', bn_weight, None), ('bn_weight 1', 1.0, None),
                               (f'bn_weight {bn_weight:g}, every eps 1e-5', bn_weight, 1e-5)):
        network, stats = build(name if ':' in name else TORCHVISION + name, batch, weight, eps)
        rms = [s['xhat_rms'] for s in stats.values()]
        ax.plot(range(1, len(rms) + 1), rms, marker='o', markersize=3, label=label)
    ax.axhline(VANISHING_XHAT_RMS, color='black', linestyle='--', linewidth=1,
               label=f'{VANISHING_XHAT_RMS:g}: input variance = eps / 3')
    ax.set_yscale('log')
    ax.set(xlabel='BN layer, in network order', ylabel='RMS of x_hat (batch statistics)',
           title=f'{name} before training: x_hat = (x - mean) / sqrt(var + eps)\n(its RMS is sqrt(var / (var + eps)): '
                 f'1 while the input varies more than eps)')
    ax.legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = OneLineParser(prog='vanishing_signal.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--data_dir', required=True, help='the Fashion-MNIST files')
    p.add_argument('--bn_weight', type=float, default=0.1, help='the initial BN scale to measure')
    p.add_argument('--image_size', type=int, default=64, help='the square image size (128 where a network needs it)')
    p.add_argument('--images', type=int, default=32, help='images in the batch')
    p.add_argument('--networks', nargs='*', default=None,
                   help='names in the zoo (default: every classifier of it with batch norm)')
    p.add_argument('--zoo', choices=('tv', 'timm'), default='tv', help="torchvision's networks or timm's models")
    p.add_argument('--max_params', type=float, default=10e6,
                   help='--zoo timm: only models of at most this many parameters (counted without building them)')
    p.add_argument('--json', default=None, help='write the measurements to this JSON file')
    p.add_argument('--figure', nargs=2, default=None, metavar=('NETWORK', 'PNG'),
                   help="draw one network's x_hat RMS layer by layer into PNG, and measure nothing else")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.figure:
        figure(args.figure[0], images(args.data_dir, args.images, args.image_size), args.bn_weight, args.figure[1])
        return 0
    results = {}
    prefix = TORCHVISION if args.zoo == 'tv' else TIMM
    names, unbuilt = args.networks, {}
    if not names:
        names, unbuilt = (torchvision_classifiers(), {}) if args.zoo == 'tv' else timm_models(args.max_params)
    for name, why in unbuilt.items():
        print(f'{TIMM + name:<22} not built with num_classes=10 alone: {why}', flush=True)
    for name in (prefix + name for name in names):
        started = time.time()
        row = None
        for size in (args.image_size, 128):
            batch = images(args.data_dir, args.images, size)
            try:
                row = {'image_size': size, 'at_bn_weight': measure(name, batch, args.bn_weight),
                       'at_1': measure(name, batch, 1.0), 'small_eps': measure(name, batch, args.bn_weight, 1e-5)}
                break
            except Exception as error:  # no batch norm, too small an image, or a model that fails at this size
                row = {'skipped': f'{type(error).__name__}: {(str(error).splitlines() or [""])[0][:120]}'}
                if 'no batch norm' in str(error):
                    break
        row['seconds'] = round(time.time() - started, 1)
        if 'at_bn_weight' in row:
            row['train_py_warns'] = row['at_bn_weight']['train_py_warns']  # train.py's vanishing warning at epoch 0
        results[name] = row
        if 'skipped' in row:
            print(f'{name:<22} skipped: {row["skipped"]}', flush=True)
            continue
        a, one, small = row['at_bn_weight'], row['at_1'], row['small_eps']
        print(f"{name:<22} eps {a['eps']}: {a['vanished']:>3}/{a['layers']:<3} layers vanish at {args.bn_weight:g} "
              f"(first {a['first_vanished']}), {one['vanished']} at 1, {small['vanished']} with eps 1e-5; logits std "
              f"{a['logits_std']:.2e} (1: {one['logits_std']:.2e})", flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'bn_weight': args.bn_weight, 'threshold_xhat_rms': VANISHING_XHAT_RMS, 'zoo': args.zoo,
                       'max_params': args.max_params if args.zoo == 'timm' else None, 'torch': torch.__version__,
                       'networks': results, 'not_built': unbuilt}, f, indent=1)
    return 0


if __name__ == '__main__':
    with exit_on_error('vanishing_signal.py'):
        sys.exit(main())
