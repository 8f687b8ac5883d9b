"""What watching a run costs: each tracker's time per epoch, its start (imports included), and a dead MLflow server.

    python benchmarks/bench_tracking.py experiments/observations_mlp/fashionmnist/results/proposed_seed1.json

Replays a finished run's record through TensorBoard and MLflow (a local SQLite store) in a temporary
folder, epoch by epoch, as lifecycle.RunOutputs tells them during training (on its background
thread, beside the next epoch's training), and times every call; then starts MLflow against a
localhost port where nothing answers. Prints a table; docs/tracking.md gives its numbers.
"""
import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from revisiting_bn import tracking  # noqa: E402


def replay(make, record):
    """(seconds to start, [seconds per epoch], seconds to close) of one tracker over ``record``'s epochs."""
    started = time.perf_counter()
    tracker = make({**record, 'epochs': [], 'norm_statistics': _upto(record, 0)})
    begin = time.perf_counter() - started
    epochs = []
    for index, row in enumerate(record['epochs']):
        partial = {**record, 'epochs': record['epochs'][:index + 1], 'norm_statistics': _upto(record, row['epoch'])}
        started = time.perf_counter()
        tracker.epoch(partial)
        epochs.append(time.perf_counter() - started)
    started = time.perf_counter()
    tracker.close(record, 'finished')
    return begin, epochs, time.perf_counter() - started


def _upto(record, epoch):
    stats = record.get('norm_statistics')
    if not stats:
        return stats
    return {**stats, 'epochs': [e for e in stats['epochs'] if e['epoch'] <= epoch]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('record', help="a finished run's results JSON")
    args = parser.parse_args()
    with open(args.record) as f:
        record = json.load(f)
    name = record['config']['name']
    with tempfile.TemporaryDirectory() as folder:
        files = [os.path.join(folder, 'none')]
        rows = [('TensorBoard', replay(lambda r: tracking.TensorBoard(os.path.join(folder, 'tb'), name, r), record)),
                ('MLflow (SQLite)', replay(lambda r: tracking.MLflow(f'sqlite:///{folder}/mlflow.db', 'bench', name, r,
                                                                     files), record))]
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    dead = tracking.MLflow(f'http://127.0.0.1:{port}', 'bench', name, record, [])
    lost = time.perf_counter() - started
    scalars = len(tracking.epoch_scalars(record, record['epochs'][-1]['epoch']))
    print(f'{name}: {len(record["epochs"])} epochs, {scalars} scalars an epoch')
    print('| tracker | start (first use, imports included) | per epoch: median | per epoch: max | close |')
    print('|---|---|---|---|---|')
    for label, (begin, epochs, close) in rows:
        print(f'| {label} | {begin:.2f} s | {statistics.median(epochs) * 1000:.1f} ms | {max(epochs) * 1000:.1f} ms | '
              f'{close:.2f} s |')
    print(f'MLflow at a closed localhost port: {lost:.2f} s until it is given up (warned: {dead.broken})')


if __name__ == '__main__':
    main()
