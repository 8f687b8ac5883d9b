import json
import math
import os
import subprocess
import sys

import pytest
import torch

import train
from conftest import ROOT, write_cifar, write_fashionmnist
from networks import construct_network
from results import output_paths

FAST = ['--dataset', 'fake', '--fake_size', '200', '--batch_size', '64', '--device', 'cpu']


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_end_to_end_two_epochs_writes_consistent_results(tmp_path):
    path = str(tmp_path) + '/'
    completed = subprocess.run([sys.executable, 'train.py', *FAST, '--num_epochs', '2', '--path', path,
                                '--seed', '3'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    name = 'fake_train_weight0.1_c100'
    assert files_under(tmp_path) == [f'fake/networks/{name}-best.pt', f'fake/networks/{name}-last.pt',
                                     f'fake/results/{name}.json', f'fake/results/{name}.txt']
    lines = completed.stdout.strip().splitlines()
    assert sum(line.startswith('epoch ') for line in lines) == 2 and 'meaningless' in lines[0]

    record = json.loads((tmp_path / 'fake/results' / f'{name}.json').read_text())
    assert record['status'] == 'finished' and record['fake_data'] is True
    assert record['config']['seed'] == '3' and record['config']['bn_weight'] == 0.1
    assert (record['train_size'], record['val_size'], record['test_size']) == (180, 20, 40)
    epochs = record['epochs']
    assert [e['epoch'] for e in epochs] == [1, 2]
    assert epochs[0]['learning_rate'] == 0.1
    assert epochs[1]['learning_rate'] == pytest.approx(1e-8 + (0.1 - 1e-8) * (1 + math.cos(math.pi / 2)) / 2)
    best = max(epochs, key=lambda e: e['val_accuracy'])  # max() keeps the first of equal values
    assert record['best_epoch'] == best['epoch'] and record['best_val_accuracy'] == best['val_accuracy']
    assert record['test_accuracy_at_best'] == best['test_accuracy']
    assert record['final_test_accuracy'] == epochs[-1]['test_accuracy']
    assert record['torch_version'] == torch.__version__ and record['device'] == 'cpu'
    assert record['wall_time_s'] > 0 and all(math.isfinite(e['train_loss']) for e in epochs)

    text = (tmp_path / 'fake/results' / f'{name}.txt').read_text().splitlines()
    assert 'network: resnet18,,,,' in text and 'c: 100.0,,,,' in text
    table = text[text.index('epoch,train_loss,val_loss,val_accuracy,test_accuracy') + 1:]
    assert len(table) == 2
    for row, e in zip(table, epochs):
        values = [float(v) for v in row.split(',')]
        assert values == pytest.approx([e['epoch'], e['train_loss'], e['val_loss'], e['val_accuracy'],
                                        e['test_accuracy']], abs=1e-4)

    # The saved weights are the best epoch's: re-evaluating them reproduces its validation accuracy.
    state = torch.load(tmp_path / 'fake/networks' / f'{name}-best.pt', map_location='cpu')
    network = construct_network('resnet18', 10, 'fake', 0.1, 'bn')
    network.load_state_dict(state)
    args = train.validate_args(train.build_parser().parse_args(FAST), train.build_parser())
    data = train.prepare_data(args, output_paths(args.path, args.dataset, args.name), torch.device("cpu"))
    val = train.validate(network, data['val'], torch.nn.CrossEntropyLoss())
    assert val['accuracy'] == pytest.approx(record['best_val_accuracy'])
    assert val['loss'] == pytest.approx(best['val_loss'], rel=1e-5)


def run_in_process(tmp_path, *extra):
    return train.main([*FAST, '--num_epochs', '1', '--path', str(tmp_path) + '/', *extra])


def test_same_seed_same_run_different_seed_different_run(tmp_path):
    a = run_in_process(tmp_path, '--seed', '5', '--name', 'a')
    b = run_in_process(tmp_path, '--seed', '05', '--name', 'b')
    c = run_in_process(tmp_path, '--seed', '6', '--name', 'c')
    assert b['config']['seed'] == '5'
    strip = lambda r: [{k: v for k, v in e.items() if k != 'epoch_time_s'} for e in r['epochs']]  # noqa: E731
    assert strip(a) == strip(b) and strip(a) != strip(c)
    weights = lambda n: torch.load(tmp_path / 'fake/networks' / f'{n}-best.pt')  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(weights('a').values(), weights('b').values()))


def test_bf16_channels_last_on_cpu(tmp_path):
    record = run_in_process(tmp_path, '--precision', 'bf16', '--channels_last')
    assert record['config']['precision'] == 'bf16' and record['config']['cuda_graph'] is False
    assert math.isfinite(record['epochs'][0]['train_loss'])


def test_optimizer_groups_follow_the_flags():
    parser = train.build_parser()
    network = construct_network('resnet18', 10, 'fake', 0.1, 'bn')
    args = train.validate_args(parser.parse_args(FAST + ['--num_epochs', '4']), parser)
    optimizer, scheduler = train.build_optimizer(network, args)
    assert [g['lr'] for g in optimizer.param_groups] == pytest.approx([0.1, 0.001, 0.1])
    assert [g['weight_decay'] for g in optimizer.param_groups] == [0, 0, 1e-4]
    assert all(g['momentum'] == 0.9 for g in optimizer.param_groups)
    for _ in range(2):
        optimizer.step()  # no gradients: changes nothing, keeps the scheduler's call order
        scheduler.step()
    cosine = lambda base: 1e-8 + (base - 1e-8) * (1 + math.cos(math.pi * 2 / 4)) / 2  # noqa: E731
    assert [g['lr'] for g in optimizer.param_groups] == pytest.approx([cosine(0.1), cosine(0.001), cosine(0.1)],
                                                                      rel=1e-12)
    plain = train.validate_args(parser.parse_args(FAST + ['--weight_decay', '0', '--c', '1', '--scheduler',
                                                          'none']), parser)
    optimizer, scheduler = train.build_optimizer(network, plain)
    assert len(optimizer.param_groups) == 1 and scheduler is None
    assert len(optimizer.param_groups[0]['params']) == sum(p.requires_grad for p in network.parameters())


def test_defaults_match_the_original_readme():
    args = train.validate_args(train.build_parser().parse_args([]), train.build_parser())
    assert (args.dataset, args.network, args.batch_size, args.num_epochs, args.learning_rate, args.scheduler,
            args.momentum, args.weight_decay, args.bn_weight, args.c, args.input_norm, args.seed) == (
        'cifar10', 'resnet18', 128, 180, 0.1, 'cos', 0.9, 1e-4, 0.1, 100, 'bn', '1')
    assert args.name == 'cifar10_train_weight0.1_c100' and args.path == os.path.join('.', 'training', '')
    assert args.device == ('cuda' if torch.cuda.is_available() else 'cpu')


def test_cifar10_trains_offline_from_files_in_the_images_folder(tmp_path):
    write_cifar(str(tmp_path / 'cifar10' / 'images'), per_batch=40, test_size=30)
    record = train.main(['--dataset', 'cifar10', '--path', str(tmp_path), '--num_epochs', '1', '--device', 'cpu',
                         '--batch_size', '50', '--input_norm', 'dataset', '--bn_weight', '1', '--c', '1'])
    assert (record['train_size'], record['val_size'], record['test_size']) == (180, 20, 30)
    assert list(record['input_mean']) == [0.4916, 0.4823, 0.4467]  # the paper's CIFAR-10 statistics
    assert (tmp_path / 'cifar10' / 'results' / 'cifar10_train_weight1_c1.json').exists()


def test_fashionmnist_from_data_dir_with_dataset_statistics(tmp_path):
    write_fashionmnist(str(tmp_path / 'elsewhere'))
    record = train.main(['--dataset', 'fashionmnist', '--data_dir', str(tmp_path / 'elsewhere'), '--path',
                         str(tmp_path / 'out'), '--num_epochs', '1', '--device', 'cpu', '--input_norm', 'dataset'])
    assert record['input_mean'][0] == pytest.approx(127.5 / 255, abs=0.02) and len(record['input_std']) == 1
    assert files_under(tmp_path / 'out') == ['fashionmnist/networks/fashionmnist_train_weight0.1_c100-best.pt',
                                             'fashionmnist/networks/fashionmnist_train_weight0.1_c100-last.pt',
                                             'fashionmnist/results/fashionmnist_train_weight0.1_c100.json',
                                             'fashionmnist/results/fashionmnist_train_weight0.1_c100.txt']


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, 'isatty', lambda: False)
    quiet = train.Progress(200, 'epoch 1/2')
    for step in range(1, 201):
        quiet.update(step)
    quiet.close()
    assert capsys.readouterr().out == ''
    monkeypatch.setattr(sys.stdout, 'isatty', lambda: True)
    bar = train.Progress(200, 'epoch 1/2')
    for step in range(1, 201):
        bar.update(step)
    bar.close()
    out = capsys.readouterr().out
    assert out.count('\r') <= 52 and '200/200' in out and '#' * 30 in out and '\n' not in out


def test_validation_split_does_not_depend_on_the_trial_seed():
    parser = train.build_parser()
    splits = []
    for seed in ('1', '7'):
        args = train.validate_args(parser.parse_args(FAST + ['--seed', seed]), parser)
        data = train.prepare_data(args, output_paths(args.path, args.dataset, args.name), torch.device('cpu'))
        splits.append((data['val'].images, data['val'].labels, data['train'].labels))
    assert all(torch.equal(a, b) for a, b in zip(*splits))
