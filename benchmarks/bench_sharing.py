"""Epoch times of train.py when runs share a CPU: alone or side by side, per thread setting, and a sweep's runs.

The sweep's two runs go at once (its default) or one after the other (--cpu_jobs 1). Run it on an
otherwise idle machine; it takes a few minutes (docs/threads.md has its figures).

    python benchmarks/bench_sharing.py --data_dir /usr/share/datasets/fashion-mnist
    python benchmarks/bench_sharing.py --data_dir ... --code /path/to/another/checkout   # the same, with other code

Every run trains the MLP on Fashion-MNIST (paper's protocol, --epochs epochs) from the code in --code;
threads are set through the environment (OMP_NUM_THREADS, OMP_WAIT_POLICY), so any version of
train.py can be measured. It prints the median epoch time of each run and writes them to --json.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY)  # this checkout's revisiting_bn, from any folder

from revisiting_bn.cli import OneLineParser, exit_on_error  # noqa: E402

# (what, how many runs at once, environment of each)
SCENARIOS = [
    ('one alone, default threads', 1, {}),
    ('one alone, OMP_NUM_THREADS=1', 1, {'OMP_NUM_THREADS': '1'}),
    ('two side by side, default threads', 2, {}),
    ('two side by side, OMP_NUM_THREADS=1 each', 2, {'OMP_NUM_THREADS': '1'}),
    ('one alone, OMP_WAIT_POLICY=PASSIVE', 1, {'OMP_WAIT_POLICY': 'PASSIVE'}),
    ('two side by side, OMP_WAIT_POLICY=PASSIVE', 2, {'OMP_WAIT_POLICY': 'PASSIVE'}),
]


def environment(**settings):
    """This environment without its OpenMP settings, plus ``settings``: each scenario sets its own."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith('OMP_')}, **settings}


def epoch_times(args, count, env, folder):
    """Start ``count`` train.py runs together; the median epoch time of each."""
    processes = []
    for index in range(count):
        command = [sys.executable, os.path.join(args.code, 'train.py'), '--dataset', 'fashionmnist', '--network',
                   'mlp', '--num_epochs', str(args.epochs), '--data_dir', args.data_dir, '--device', 'cpu',
                   '--path', folder, '--name', f'run{index}', '--seed', str(index + 1)]
        processes.append(subprocess.Popen(command, env=environment(**env), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
    for process in processes:
        if process.wait():
            raise RuntimeError(f'a train.py run failed: {process.stderr.read()[-500:]}')
    medians = []
    for index in range(count):
        with open(os.path.join(folder, 'fashionmnist', 'results', f'run{index}.json')) as f:
            medians.append(statistics.median(e['epoch_time_s'] for e in json.load(f)['epochs']))
    return medians


def sweep_time(args, cpu_jobs, folder):
    """Wall time of a sweep of two runs (seeds 1 and 2 of the proposed configuration)."""
    command = [sys.executable, os.path.join(args.code, 'sweep.py'), '--configs', 'proposed', '--seeds', '1-2',
               '--gpus', '0', '--no_report', '--path', folder]
    command += ['--cpu_jobs', str(cpu_jobs)] if cpu_jobs else []
    command += ['--', '--dataset', 'fashionmnist', '--network', 'mlp', '--num_epochs', str(args.epochs),
                '--data_dir', args.data_dir]
    started = time.time()
    subprocess.run(command, env=environment(), check=True, stdout=subprocess.DEVNULL)
    return time.time() - started


def main(argv=None):
    p = OneLineParser(prog='bench_sharing.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--data_dir', required=True, help='the Fashion-MNIST files')
    p.add_argument('--code', default=REPOSITORY, help='the checkout whose train.py and sweep.py to time (default: this one)')
    p.add_argument('--epochs', type=int, default=5, help='epochs of every run')
    p.add_argument('--sweep_jobs', nargs='*', type=int, default=[1, 0],
                   help="sweep.py --cpu_jobs values to time (0: the sweep's default); none for a sweep without it")
    p.add_argument('--json', default=None, help='write the results to this JSON file')
    args = p.parse_args(argv)
    results = {}
    for what, count, env in SCENARIOS:
        with tempfile.TemporaryDirectory() as folder:
            results[what] = epoch_times(args, count, env, folder)
        print(f'{what:<45} {" / ".join(f"{t:.2f} s" for t in results[what])} per epoch', flush=True)
    for jobs in args.sweep_jobs or [None]:
        with tempfile.TemporaryDirectory() as folder:
            what = f'sweep of 2 runs, {f"--cpu_jobs {jobs}" if jobs else "default"}'
            results[what] = sweep_time(args, jobs, folder)
        print(f'{what:<45} {results[what]:.1f} s in all', flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == '__main__':
    with exit_on_error('bench_sharing.py'):
        main()
