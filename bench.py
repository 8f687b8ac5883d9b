"""Training throughput: the usual per-image PIL/DataLoader pipeline versus this repository's fast path.

    python bench.py                       # CUDA if present: ResNet-18, batch 128, 45,000 CIFAR-shaped images
    python bench.py --device cpu          # small sizes, a few steps

Both pipelines train the same network (the paper's ResNet-18 with input BN) with
the same optimizer groups on the same fake CIFAR-shaped data; only the training
step is timed (after warm-up, with the device synchronised at both ends).
(a) usual: uint8 HWC images -> PIL -> RandomHorizontalFlip -> ToTensor ->
    Normalize in a torch DataLoader, fp32 eager, cuDNN deterministic.
(b) fast: train.py's defaults on that device: images resident on the device,
    tensor-op batching, and on CUDA the whole step replayed from one CUDA graph.
"""
import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from data import ImageBatches, load_dataset
from engine import TrainStep
from fast_path import PRECISIONS
from networks import NETWORKS, construct_network
from seeds import make_deterministic
from train_args import OneLineParser
from weight_decay_and_learning_rate import adjust_weight_decay_and_learning_rate

PAPER_TRAIN_SIZE, PAPER_EPOCHS = 45000, 180


def build(args, device):
    make_deterministic(1)
    network = construct_network(args.network, 10, 'fake', 0.1, 'bn').to(device)
    groups = adjust_weight_decay_and_learning_rate(network, 1e-4, 0.1, 100)
    return network, torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def usual_pipeline(args, device, images, labels):
    """The typical research script: per-image PIL transforms in a DataLoader, fp32 eager."""
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                    transforms.Normalize((0.4916, 0.4823, 0.4467), (0.2472, 0.2437, 0.2618))])
    hwc = images.permute(0, 2, 3, 1).numpy()

    class PILDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(hwc)

        def __getitem__(self, index):
            return transform(Image.fromarray(hwc[index])), int(labels[index])

    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, pin_memory=device.type == 'cuda',
                                         persistent_workers=args.workers > 0)
    network, optimizer = build(args, device)
    network.train()
    criterion = nn.CrossEntropyLoss()

    def batches():
        while True:
            yield from loader

    stream = batches()

    def step():
        x, y = next(stream)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = criterion(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def fast_path(args, device, images, labels):
    network, optimizer = build(args, device)
    if args.cudnn_benchmark:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    if args.channels_last:
        network = network.to(memory_format=torch.channels_last)
    network.train()
    train_step = TrainStep(network, optimizer, nn.CrossEntropyLoss(), device, args.precision, args.channels_last,
                           use_graph=device.type == 'cuda' and not args.no_cuda_graph)
    data = ImageBatches(images, labels, device)

    def batches():
        while True:
            yield from ((x, y) for x, y, _ in data.shuffled(args.batch_size))

    stream = batches()
    return lambda: train_step(*next(stream))


def measure(make_step, args, device, images, labels):
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step = make_step(args, device, images, labels)
    for _ in range(args.warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - start
    rate = args.steps * args.batch_size / seconds
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == 'cuda' else None
    return {'images_per_s': rate, 'seconds': seconds, 'projected_180_epochs_min': PAPER_EPOCHS * args.train_size
            / rate / 60, 'peak_gpu_memory_gib': peak}


def main(argv=None):
    cuda = torch.cuda.is_available()
    p = OneLineParser(prog='bench.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if cuda else 'cpu', help='torch device to benchmark on')
    p.add_argument('--network', default='resnet18', choices=tuple(NETWORKS), help='network to train')
    p.add_argument('--batch_size', type=int, default=None, help='batch size (default: 128 on CUDA, 32 on CPU)')
    p.add_argument('--train_size', type=int, default=None,
                   help=f'training images, also used for the 180-epoch projection (default: {PAPER_TRAIN_SIZE} '
                        'on CUDA, 256 on CPU)')
    p.add_argument('--steps', type=int, default=None, help='timed steps (default: 300 on CUDA, 4 on CPU)')
    p.add_argument('--warmup', type=int, default=None, help='untimed steps first (default: 30 on CUDA, 1 on CPU)')
    p.add_argument('--workers', type=int, default=0, help='DataLoader workers of the usual pipeline')
    p.add_argument('--precision', default='fp32', choices=tuple(PRECISIONS), help='precision of the fast path')
    p.add_argument('--channels_last', action='store_true', help='channels-last layout on the fast path')
    p.add_argument('--no_cuda_graph', action='store_true', help='eager steps on the fast path')
    p.add_argument('--cudnn_benchmark', action='store_true',
                   help='fast path with cuDNN autotuning instead of deterministic algorithms (to measure the cost)')
    p.add_argument('--skip_usual', action='store_true', help='time only the fast path')
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    args = p.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        p.error(f'--device {args.device!r} is not a torch device')
    if device.type == 'cuda' and not cuda:
        p.error(f'--device {args.device} asked for CUDA, but no CUDA GPU is available')
    on_gpu = device.type == 'cuda'
    for name, gpu_default, cpu_default in (('batch_size', 128, 32), ('train_size', PAPER_TRAIN_SIZE, 256),
                                           ('steps', 300, 4), ('warmup', 30, 1)):
        if getattr(args, name) is None:
            setattr(args, name, gpu_default if on_gpu else cpu_default)
        if getattr(args, name) < (0 if name == 'warmup' else 1) or args.workers < 0:
            p.error(f'--{name} and --workers must be positive')
    if args.train_size < args.batch_size:
        p.error('--train_size must be at least --batch_size')
    if args.precision == 'fp16' and not on_gpu:
        p.error('--precision fp16 needs a CUDA device')

    data = load_dataset('fake', '', fake_size=max(args.train_size, 100))
    images, labels = data.train_images[:args.train_size], data.train_labels[:args.train_size]
    name = torch.cuda.get_device_name(device) if on_gpu else 'cpu'
    print(f'{args.network}, batch {args.batch_size}, {args.train_size} CIFAR-shaped images, {args.steps} timed steps '
          f'after {args.warmup} warm-up, on {name}, torch {torch.__version__}', flush=True)
    fast_label = (f"fast ({args.precision}{', channels_last' if args.channels_last else ''}"
                  f"{', CUDA graph' if on_gpu and not args.no_cuda_graph else ', eager'}"
                  f"{', cudnn.benchmark' if args.cudnn_benchmark else ''})")
    results = {'config': {**vars(args), 'device_name': name, 'torch_version': torch.__version__}}
    runs = ([] if args.skip_usual else [('usual', f'usual (PIL + DataLoader, {args.workers} workers, fp32 eager)',
                                         usual_pipeline)]) + [('fast', fast_label, fast_path)]
    for key, label, make_step in runs:
        result = measure(make_step, args, device, images, labels)
        results[key] = {'label': label, **result}
        peak = result['peak_gpu_memory_gib']
        peak = '' if peak is None else f', peak GPU memory {peak:.2f} GiB'
        print(f"{label:<60} {result['images_per_s']:>10,.0f} images/s, 180 epochs of {args.train_size} images in "
              f"{result['projected_180_epochs_min']:.1f} min{peak}", flush=True)
    if 'usual' in results:
        results['speedup'] = results['fast']['images_per_s'] / results['usual']['images_per_s']
        print(f"fast / usual: {results['speedup']:.2f}x")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1, default=lambda v: v if np.isscalar(v) else str(v))
    return results


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
