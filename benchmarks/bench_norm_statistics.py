"""The cost of the per-layer normalisation statistics: their time after an epoch against the epoch's own time.

    python benchmarks/bench_norm_statistics.py --data_dir /usr/share/datasets/fashion-mnist

For each network (default: mlp and resnet20 on Fashion-MNIST, on the CPU) it times
NormStatistics.measured, the work train.py adds after every epoch (median of --repeats), and one
epoch of training and evaluation as train.py runs it (the epoch_time_s of a one-epoch run), and
prints the ratio.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY)  # this checkout's revisiting_bn, from any folder

from revisiting_bn.data import load_dataset  # noqa: E402
from revisiting_bn.cli import OneLineParser, exit_on_error  # noqa: E402
from revisiting_bn.networks import construct_network  # noqa: E402
from revisiting_bn.norm_statistics import MEASURED_IMAGES, NormStatistics  # noqa: E402


def record_time(network_name, data, repeats):
    network = construct_network(network_name, 10, 'fashionmnist', 0.1, 'bn')
    images = data.test_images[:MEASURED_IMAGES].float().div(255)  # what the first validation images look like
    stats, times = NormStatistics(network, images), []
    for epoch in range(repeats):
        started = time.perf_counter()
        stats.measured(epoch)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def epoch_time(network_name, data_dir):
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, os.path.join(REPOSITORY, 'train.py'), '--dataset', 'fashionmnist', '--data_dir',
                        data_dir, '--network', network_name, '--num_epochs', '1', '--path', folder, '--device', 'cpu',
                        '--no_norm_statistics', '--name', 'run'], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(folder, 'fashionmnist', 'results', 'run.json')) as f:
            return json.load(f)['epochs'][0]['epoch_time_s']


def main(argv=None):
    p = OneLineParser(prog='bench_norm_statistics.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--data_dir', required=True, help='the Fashion-MNIST files')
    p.add_argument('--network', nargs='+', default=['mlp', 'resnet20'], help='networks to measure')
    p.add_argument('--repeats', type=int, default=20, help='measurements of the statistics, the median is kept')
    args = p.parse_args(argv)
    data = load_dataset('fashionmnist', args.data_dir, download=False)
    for network_name in args.network:
        measured, epoch = record_time(network_name, data, args.repeats), epoch_time(network_name, args.data_dir)
        print(f'{network_name:<9} statistics {1000 * measured:.1f} ms, epoch {epoch:.1f} s: '
              f'{100 * measured / epoch:.2f}% of an epoch ({torch.get_num_threads()} threads)', flush=True)


if __name__ == '__main__':
    with exit_on_error('bench_norm_statistics.py'):
        main()
