"""What a short run pays before it trains, as train.py and as a sweep's run, and a sweep against one run after another.

    python benchmarks/bench_startup.py --trials 3
    python benchmarks/bench_startup.py --trials 3 --code ../older-checkout    # the same, timing another checkout
    python benchmarks/bench_startup.py --trials 5 --epochs 1 --no_startup     # only the sweeps of 1-epoch runs

1. Start-up: a run of one epoch on 180 fake images (a few steps: what is left is start-up and the
   run's files), as a `train.py` process and as a sweep's run (a child of the sweep's warm workers,
   sweep_local.Workers), each timed from its launch to its end; the record's wall_time_s (from the
   run's start of training work: loading the data, building, the epochs) says what came before it.
2. Sweeps: four MLP runs on Fashion-MNIST (baseline and proposed, seeds 1-2), of 1 and of 5 epochs,
   one `train.py` after another against `sweep.py --seeds 1-2` (two at a time on two cores, with and
   without its report at the end), each in a fresh folder, every trial.
Prints the tables docs/benchmark.md gives. Run it on a quiet machine: nothing else on its cores.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TINY = ['--dataset', 'fake', '--fake_size', '200', '--network', 'mlp', '--num_epochs', '1', '--threads', '1',
        '--device', 'cpu', '--name', 'run']
MLP = ['--dataset', 'fashionmnist', '--data_dir', '/usr/share/datasets/fashion-mnist', '--network', 'mlp']
PAIR = {'baseline': ['--bn_weight', '1', '--c', '1', '--input_norm', 'dataset'],
        'proposed': ['--bn_weight', '0.1', '--c', '100', '--input_norm', 'bn']}


CODE = ROOT  # the checkout whose train.py and sweep.py are timed (--code)


def timed(command, **kwargs):
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=CODE, **kwargs)
    if done.returncode:  # a sweep says how each failed run ended on stdout, the summary on stderr
        raise SystemExit(f'failed: {" ".join(command)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}')
    return time.perf_counter() - started


def startup(trials):
    """[(seconds from launch to end, the record's wall_time_s)] of the tiny run, as train.py and as a worker's child."""
    rows = {'train.py process': [], "sweep's run (warm workers)": []}
    workers = _workers()
    with tempfile.TemporaryDirectory() as folder:
        for trial in range(trials):
            path = os.path.join(folder, f'p{trial}')
            seconds = timed([sys.executable, 'train.py', *TINY, '--path', path])
            rows['train.py process'].append((seconds, _wall(path)))
            if workers is None:
                continue
            path = os.path.join(folder, f'w{trial}')
            os.makedirs(path)
            with open(os.path.join(path, 'log'), 'a') as log:
                started = time.perf_counter()
                child = workers.launch({'argv': [*TINY, '--path', path]}, 'cpu', None, log)
                if child.wait():
                    raise SystemExit(f'the worker run failed: see {log.name}')
                if trial == 0:  # the first also started the workers: not a run's own start-up
                    continue
                rows["sweep's run (warm workers)"].append((time.perf_counter() - started, _wall(path)))
    return rows


def _workers():
    """The timed checkout's warm workers, or None where its sweep has none."""
    sys.path.insert(0, CODE)
    try:
        from revisiting_bn.sweep_local import Workers
    except ImportError:
        return None
    return Workers()


def _wall(path):
    with open(os.path.join(path, 'fake', 'results', 'run.json')) as f:
        return json.load(f)['wall_time_s']


def sweeps(trials, epochs):
    """Seconds of the four runs one after another, and of the sweep with and without its report, per trial."""
    rows = {'one after another': [], 'sweep.py --no_report': [], 'sweep.py (report included)': []}
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            for config, flags in PAIR.items():
                for seed in (1, 2):
                    timed([sys.executable, 'train.py', *MLP, *flags, '--num_epochs', str(epochs), '--seed', str(seed),
                           '--threads', '1', '--name', f'{config}_seed{seed}', '--path', os.path.join(folder, 'seq')])
            rows['one after another'].append(time.perf_counter() - started)
            for label, extra in (('sweep.py --no_report', ['--no_report']), ('sweep.py (report included)', [])):
                rows[label].append(timed([sys.executable, 'sweep.py', '--seeds', '1-2', '--gpus', '0', *extra,
                                          '--path', os.path.join(folder, label.split()[-1].strip('()')), '--', *MLP,
                                          '--num_epochs', str(epochs)]))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--trials', type=int, default=3)
    parser.add_argument('--epochs', type=int, nargs='+', default=[1, 5], help='epochs of the sweeps\' runs (default: 1 5)')
    parser.add_argument('--no_startup', action='store_true', help='time the sweeps only')
    parser.add_argument('--code', default=ROOT, help='the checkout to time (default: this one)')
    args = parser.parse_args()
    global CODE
    CODE = os.path.abspath(args.code)
    if not os.path.isfile(os.path.join(CODE, 'sweep.py')):
        raise SystemExit(f'--code {args.code}: no sweep.py there')
    if not args.no_startup:
        print('| launched as | launch to end, per trial (s) | of which training work, wall_time_s (s) |')
        print('|---|---|---|')
        for label, values in startup(args.trials + 1).items():
            print(f"| {label} | {', '.join(f'{s:.2f}' for s, _ in values)} | {', '.join(f'{w:.2f}' for _, w in values)} |")
    for epochs in args.epochs:
        rows = sweeps(args.trials, epochs)
        base = rows['one after another']
        print(f'\nfour MLP runs on Fashion-MNIST, {epochs} epoch{"s" if epochs > 1 else ""} each:\n')
        print('| how | seconds, per trial | against one after another, per trial |')
        print('|---|---|---|')
        for label, values in rows.items():
            ratios = ', '.join(f'{v / b:.2f}x' for v, b in zip(values, base))
            print(f"| {label} | {', '.join(f'{v:.1f}' for v in values)} (median {statistics.median(values):.1f}) | "
                  f'{ratios} |', flush=True)


if __name__ == '__main__':
    main()
