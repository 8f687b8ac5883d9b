"""Training throughput: the usual per-image PIL/DataLoader pipeline, this repository's fast path, and a bare loop.

    python bench.py                                  # CUDA if present: ResNet-18, batch 128, CIFAR-shaped
    python bench.py --device cpu                     # the MLP and ResNet-20 on 28x28x1 images, batch 128
    python bench.py --device cpu --network resnet20 --channels_last
    python bench.py --device cpu --pipelines fast --sharing   # 1 thread, all threads, one job per core

Every pipeline trains the same network (with the paper's input BN and optimizer
groups) on the same random uint8 images; only training steps are timed, after
warm-up, with the device synchronised at both ends.
(a) usual: uint8 HWC images -> PIL -> RandomHorizontalFlip -> ToTensor -> Normalize
    in a torch DataLoader, torch.optim.SGD, fp32 eager: the typical research script.
(b) fast: train.py's own path: images resident on the device, tensor-op batching,
    engine.Step (on CUDA, replayed from one CUDA graph by fast_path.GraphStep).
(c) bare: the same step on float batches made beforehand, no data work at all:
    the network's own ceiling on this machine.
With --sharing (on the CPU), the fast path is also timed with 1 thread, with one thread per
core, and as one single-thread job per core at once (separate processes timed over the same
seconds, their images/s summed): which way a sweep gets the most images per second.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

from revisiting_bn.cpu_threads import set_threads, usable_cores
from revisiting_bn.data import ImageBatches
from revisiting_bn.cli import OneLineParser, exit_on_error, plural
from revisiting_bn.engine import PRECISIONS, Epoch
from revisiting_bn.fast_path import build_step
from revisiting_bn.networks import NETWORKS, construct_network
from revisiting_bn.protocol import DEFAULTS, VALIDATION_FRACTION
from revisiting_bn.seeds import make_deterministic
from revisiting_bn.flags import device_problem, resolve_device
from revisiting_bn.weight_decay_and_learning_rate import build_optimizer

# CIFAR-10's 50,000 training images less the validation split, and the protocol's epochs.
PAPER_TRAIN_SIZE, PAPER_EPOCHS = round(50000 * (1 - VALIDATION_FRACTION)), DEFAULTS['num_epochs']
SHAPES = {'cifar': (3, 32, 32), 'mnist': (1, 28, 28)}  # CIFAR-10/100, and Fashion-MNIST
DATASET_OF_SHAPE = {'cifar': 'fake', 'mnist': 'fashionmnist'}


def build(args, network_name, device):
    make_deterministic(1)
    network = construct_network(network_name, 10, DATASET_OF_SHAPE[args.shape], DEFAULTS['bn_weight'],
                                DEFAULTS['input_norm']).to(device)
    if args.channels_last:
        network = network.to(memory_format=torch.channels_last)
    network.train()
    return network, build_optimizer(network, DEFAULTS['learning_rate'], DEFAULTS['momentum'], DEFAULTS['weight_decay'],
                                    DEFAULTS['c'], 'none')[0]


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def endless(make_epoch):
    while True:
        yield from make_epoch()


def usual_pipeline(args, network_name, device, images, labels):
    """Per-image PIL transforms in a DataLoader, fp32 eager, torch.optim.SGD."""
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                    transforms.Normalize((0.5,) * images.shape[1], (0.25,) * images.shape[1])])
    hwc = images.permute(0, 2, 3, 1).squeeze(3).numpy()  # PIL wants (H, W) for one channel

    class PILDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(hwc)

        def __getitem__(self, index):
            return transform(Image.fromarray(hwc[index])), int(labels[index])

    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, pin_memory=device.type == 'cuda',
                                         persistent_workers=args.workers > 0)
    network, optimizer = build(args, network_name, device)
    batches = endless(lambda: loader)

    def step():
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = nn.functional.cross_entropy(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def fast_path(args, network_name, device, images, labels):
    """train.py's path: the data on the device as uint8, tensor-op batches, fast_path.build_step's step."""
    network, optimizer = build(args, network_name, device)
    if args.cudnn_benchmark:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    data = ImageBatches(images, labels, device)
    step = build_step(network, optimizer, nn.CrossEntropyLoss(), device, args.precision, args.channels_last,
                      use_graph=device.type == 'cuda' and not args.no_cuda_graph)
    epoch = Epoch(data.num_batches(args.batch_size), device)

    def one_epoch():
        epoch.begin()
        yield from ((x, y) for x, y, _ in data.shuffled(args.batch_size))
        epoch.end()

    batches = endless(one_epoch)
    return lambda: epoch.record(step(*next(batches)))


def bare_loop(args, network_name, device, images, labels):
    """The step alone, on float batches made beforehand: what the network itself costs here."""
    network, optimizer = build(args, network_name, device)
    made = [(x.contiguous(memory_format=torch.channels_last) if args.channels_last else x, y) for x, y, _ in
            ImageBatches(images, labels, device).shuffled(args.batch_size)]
    batches = endless(lambda: made)

    criterion = nn.CrossEntropyLoss()

    def step():
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        criterion(network(x), y).backward()
        optimizer.step()
    return step


PIPELINES = {'usual': usual_pipeline, 'fast': fast_path, 'bare': bare_loop}


def measure(make_step, args, network_name, device, images, labels):
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step = make_step(args, network_name, device, images, labels)
    for _ in range(args.warmup):
        step()
    synchronize(device)
    steps, start = 0, time.perf_counter()
    while steps < args.steps or time.perf_counter() - start < args.min_time:
        step()
        steps += 1
        if steps % 10 == 0:
            synchronize(device)
    synchronize(device)
    seconds = time.perf_counter() - start
    rate = steps * args.batch_size / seconds
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == 'cuda' else None
    return {'images_per_s': rate, 'steps': steps, 'seconds': seconds, 'peak_gpu_memory_gib': peak,
            'projected_180_epochs_min': PAPER_EPOCHS * args.train_size / rate / 60}


def sharing_job(args, network_name, threads, barrier, out):
    """The command of one --sharing job (the fast path alone, ``threads`` threads), which times once every job
    has reached the ``barrier`` folder."""
    flags = ['--device', 'cpu', '--network', network_name, '--pipelines', 'fast', '--threads', threads,
             '--shape', args.shape, '--batch_size', args.batch_size, '--train_size', args.train_size, '--steps',
             args.steps, '--min_time', args.min_time, '--warmup', args.warmup, '--barrier', barrier, '--json', out]
    return [sys.executable, os.path.abspath(__file__), *map(str, flags)]


def wait_for_all(barrier):
    """A --sharing job marks itself ready in the folder ``barrier`` (named ready-N for N jobs) and waits for the
    others, so that every job times the same seconds."""
    open(os.path.join(barrier, str(os.getpid())), 'w').close()
    jobs = int(os.path.basename(barrier).split('-')[1])
    while len(os.listdir(barrier)) < jobs:
        time.sleep(0.01)


def jobs_at_once(args, network_name, jobs, threads):
    """Summed images/s of ``jobs`` processes of ``threads`` threads each, timed over the same seconds."""
    with tempfile.TemporaryDirectory() as folder:
        outs = [os.path.join(folder, f'{job}.json') for job in range(jobs)]
        barrier = f'{folder}/ready-{jobs}'
        os.mkdir(barrier)
        running = [subprocess.Popen(sharing_job(args, network_name, threads, barrier, out), stdout=subprocess.DEVNULL,
                                    env=dict(os.environ, OMP_NUM_THREADS=str(threads))) for out in outs]
        if any(job.wait() for job in running):
            raise RuntimeError(f'a --sharing job of {network_name} failed')
        total = 0.0
        for out in outs:
            with open(out) as f:
                total += json.load(f)[network_name]['fast']['images_per_s']
    return total


def sharing(args, network_name):
    """images/s of the fast path, each way in its own processes: one job with 1 thread, one with a thread per
    core, and --jobs single-thread jobs at once (summed)."""
    cores = usable_cores()
    ways = [(1, 1)] + ([(1, cores)] if cores > 1 else []) + ([(args.jobs, 1)] if args.jobs > 1 else [])
    return {f'{plural(jobs, "job")} x {plural(threads, "thread")}': jobs_at_once(args, network_name, jobs, threads)
            for jobs, threads in ways}


def parse(argv):
    cuda = torch.cuda.is_available()
    p = OneLineParser(prog='bench.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if cuda else 'cpu', help='torch device to benchmark on')
    p.add_argument('--network', nargs='+', default=None, choices=tuple(NETWORKS),
                   help='networks to measure (default: resnet18 on CUDA; mlp and resnet20 on CPU)')
    p.add_argument('--shape', choices=tuple(SHAPES), default=None,
                   help='image shape: cifar (3x32x32) or mnist (1x28x28) (default: cifar on CUDA, mnist on CPU)')
    p.add_argument('--pipelines', nargs='+', choices=tuple(PIPELINES), default=list(PIPELINES),
                   help='which pipelines to time (default: all three)')
    p.add_argument('--batch_size', type=int, default=DEFAULTS['batch_size'], help='batch size')
    p.add_argument('--train_size', type=int, default=None,
                   help=f'images to cycle through, also used for the 180-epoch projection (default: {PAPER_TRAIN_SIZE} '
                        'on CUDA, 2560 on CPU)')
    p.add_argument('--steps', type=int, default=10, help='timed steps at least (default: 10) ...')
    p.add_argument('--min_time', type=float, default=None, help='... and at least this many seconds '
                                                                '(default: 10 on CUDA, 3 on CPU)')
    p.add_argument('--warmup', type=int, default=None, help='untimed steps first (default: 30 on CUDA, 3 on CPU)')
    p.add_argument('--workers', type=int, default=0, help='DataLoader workers of the usual pipeline')
    p.add_argument('--precision', default='fp32', choices=tuple(PRECISIONS), help='precision of the fast path')
    p.add_argument('--channels_last', action='store_true', help='channels-last layout (fast and bare)')
    p.add_argument('--no_cuda_graph', action='store_true', help='eager steps on the fast path')
    p.add_argument('--cudnn_benchmark', action='store_true',
                   help='fast path with cuDNN autotuning instead of deterministic algorithms (to measure the cost)')
    p.add_argument('--threads', type=int, default=None, help='CPU threads of this process (default: torch\'s)')
    p.add_argument('--sharing', action='store_true',
                   help='on the CPU, also time the fast path with 1 thread, one thread per core, and --jobs '
                        'single-thread jobs at once')
    p.add_argument('--jobs', type=int, default=usable_cores(), help='jobs at once for --sharing (default: one per core '
                                                                    'this process may use)')
    p.add_argument('--barrier', default=None, help=argparse.SUPPRESS)  # a --sharing job's start: see wait_for_all
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    args = p.parse_args(argv)
    if (args.threads is not None and args.threads < 1) or args.jobs < 1:
        p.error('--threads and --jobs must be >= 1')
    problem = device_problem(args.device, args.precision)
    if problem:
        p.error(problem)
    device = torch.device(str(resolve_device(args.device)))
    on_gpu = device.type == 'cuda'
    defaults = {'network': (['resnet18'], ['mlp', 'resnet20']), 'shape': ('cifar', 'mnist'),
                'train_size': (PAPER_TRAIN_SIZE, 2560), 'min_time': (10.0, 3.0), 'warmup': (30, 3)}
    for name, (gpu_default, cpu_default) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, gpu_default if on_gpu else cpu_default)
    if min(args.batch_size, args.steps, args.train_size) < 1 or min(args.warmup, args.workers, args.min_time) < 0:
        p.error('--batch_size, --steps and --train_size must be positive; --warmup, --workers and --min_time >= 0')
    if args.train_size < args.batch_size:
        p.error('--train_size must be at least --batch_size')
    if args.sharing and on_gpu:
        p.error('--sharing compares ways of sharing a CPU: use it with --device cpu')
    return args, device


def main(argv=None):
    args, device = parse(argv)
    if args.threads:
        set_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.train_size, *SHAPES[args.shape]), dtype=torch.uint8, generator=generator)
    labels = torch.arange(args.train_size) % 10
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    print(f'batch {args.batch_size}, {args.train_size} images {"x".join(map(str, SHAPES[args.shape]))}, on {name} '
          f'({plural(torch.get_num_threads(), "thread")}), torch {torch.__version__}', flush=True)
    results = {'config': {**vars(args), 'device_name': name, 'torch_version': torch.__version__,
                          'cpu_threads': torch.get_num_threads()}}
    for network_name in args.network:
        results[network_name] = {}
        if args.barrier:
            wait_for_all(args.barrier)
        for pipeline in args.pipelines:
            result = measure(PIPELINES[pipeline], args, network_name, device, images, labels)
            results[network_name][pipeline] = result
            peak = result['peak_gpu_memory_gib']
            print(f"{network_name:<9} {pipeline:<6} {result['images_per_s']:>10,.0f} images/s "
                  f"({plural(result['steps'], 'step')})"
                  f"{'' if peak is None else f', peak GPU memory {peak:.2f} GiB'}", flush=True)
        rates = {k: v['images_per_s'] for k, v in results[network_name].items()}
        if 'fast' in rates and 'bare' in rates:
            results[network_name]['fast_of_bare'] = rates['fast'] / rates['bare']
            print(f"{network_name:<9} fast is {100 * rates['fast'] / rates['bare']:.1f}% of the bare loop")
        if 'fast' in rates and 'usual' in rates:
            results[network_name]['fast_over_usual'] = rates['fast'] / rates['usual']
            print(f"{network_name:<9} fast / usual: {rates['fast'] / rates['usual']:.2f}x")
        if args.sharing:
            shared = results[network_name]['sharing'] = sharing(args, network_name)
            one = shared['1 job x 1 thread']
            for way, rate in shared.items():
                print(f"{network_name:<9} {way:<22} {rate:>10,.0f} images/s ({rate / one:.2f}x one thread)",
                      flush=True)
            print(f"{network_name:<9} most images/s on this CPU: {max(shared, key=shared.get)}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1, default=lambda v: v if np.isscalar(v) else str(v))
    return results


if __name__ == '__main__':
    with exit_on_error('bench.py'):
        sys.exit(0 if main() else 1)
