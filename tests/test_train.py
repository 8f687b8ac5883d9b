"""train.py end to end: its files, its determinism, the datasets on disk, and the original code's results."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import train
from conftest import FAST, ROOT, files_under, parse_args, write_cifar, write_fashionmnist
from revisiting_bn.engine import evaluate_network
from revisiting_bn.networks import construct_network


def test_end_to_end_two_epochs_writes_consistent_results(tmp_path):
    path = str(tmp_path) + '/'
    completed = subprocess.run([sys.executable, 'train.py', *FAST, '--num_epochs', '2', '--path', path,
                                '--seed', '3'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    name = 'fake_train_weight0.1_c100'
    assert files_under(tmp_path) == [f'fake/networks/{name}-best.pt', f'fake/networks/{name}-last.pt',
                                     f'fake/results/{name}.csv', f'fake/results/{name}.json',
                                     f'fake/results/{name}.norm_statistics.csv', f'fake/results/{name}.txt']
    lines = completed.stdout.strip().splitlines()
    assert sum(line.startswith('epoch ') for line in lines) == 2 and 'meaningless' in lines[0]

    record = json.loads((tmp_path / 'fake/results' / f'{name}.json').read_text())
    assert record['status'] == 'finished' and record['fake_data'] is True
    assert record['config']['seed'] == '3' and record['config']['bn_weight'] == 0.1
    assert (record['train_size'], record['val_size'], record['test_size']) == (180, 20, 40)
    epochs = record['epochs']
    assert [e['epoch'] for e in epochs] == [1, 2]
    assert epochs[0]['learning_rate'] == 0.1
    # CosineAnnealingLR's recursive form against the closed form: a few float64 roundings apart
    assert epochs[1]['learning_rate'] == pytest.approx(1e-8 + (0.1 - 1e-8) * (1 + math.cos(math.pi / 2)) / 2, rel=1e-12)
    best = max(epochs, key=lambda e: e['val_accuracy'])  # max() keeps the first of equal values
    assert record['best_epoch'] == best['epoch'] and record['best_val_accuracy'] == best['val_accuracy']
    assert record['test_accuracy_at_best'] == best['test_accuracy']
    assert record['final_test_accuracy'] == epochs[-1]['test_accuracy']
    assert record['torch_version'] == torch.__version__ and record['device'] == 'cpu'
    assert record['step_path'] == {'step': 'eager', 'why': 'not a CUDA device', 'check_deviation': None}
    assert record['wall_time_s'] > 0 and all(math.isfinite(e['train_loss']) for e in epochs)

    import csv  # the per-epoch CSV: one header row, a row per epoch, the JSON's numbers exactly
    with open(tmp_path / 'fake/results' / f'{name}.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [list(r) for r in rows][0] == ['epoch', 'train_loss', 'val_loss', 'val_accuracy', 'test_accuracy',
                                          'learning_rate', 'epoch_time_s']
    assert [{k: float(v) for k, v in r.items()} for r in rows] == [
        {k: float(e[k]) for k in rows[0]} for e in epochs]

    text = (tmp_path / 'fake/results' / f'{name}.txt').read_text().split('\n')
    assert text[:12] == [f'Name: {name},,,, ', 'Dataset: fake,,,, ', 'Network: mlp,,,, ', 'Batch Size: 64,,,, ',
                         'Num Epochs: 2,,,, ', 'Learning Rate: 0.1,,,, ', 'LR Scheduler: cos,,,, ',
                         'Momentum: 0.9,,,, ', 'Weight Decay: 0.0001,,,, ', 'BN Intial Scale: 0.1,,,, ',
                         'LR Reduction Value: 100,,,, ', 'Input Normalization Method: bn,,,, ']  # its typo included
    assert text[12] == 'epoch,train_loss,val_loss,val_accuracy,test_accuracy ' and text[15:] == ['']
    for row, e in zip(text[13:15], epochs):
        assert row == f"{e['epoch'] - 1},{e['train_loss']},{e['val_loss']},{e['val_accuracy']},{e['test_accuracy']} "

    # The saved weights are the best epoch's: re-evaluating them reproduces its validation accuracy.
    state = torch.load(tmp_path / 'fake/networks' / f'{name}-best.pt', map_location='cpu', weights_only=True)
    network = construct_network('mlp', 10, 'fake', 0.1, 'bn')
    network.load_state_dict(state)
    data = train.prepare_data(parse_args(FAST), '', torch.device('cpu'))
    val = evaluate_network(network, data.val, 64)
    assert val['accuracy'] == record['best_val_accuracy'] and val['loss'] == best['val_loss']  # same arithmetic


def run_in_process(tmp_path, *extra):
    return train.main([*FAST, '--num_epochs', '1', '--path', str(tmp_path) + '/', *extra])


def test_same_seed_same_run_different_seed_different_run(tmp_path):
    a = run_in_process(tmp_path, '--seed', '5', '--name', 'a')
    b = run_in_process(tmp_path, '--seed', '05', '--name', 'b')
    c = run_in_process(tmp_path, '--seed', '6', '--name', 'c')
    assert b['config']['seed'] == '5'
    strip = lambda r: [{k: v for k, v in e.items() if k != 'epoch_time_s'} for e in r['epochs']]  # noqa: E731
    assert strip(a) == strip(b) and strip(a) != strip(c)
    weights = lambda n: torch.load(tmp_path / 'fake/networks' / f'{n}-best.pt', weights_only=True)  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(weights('a').values(), weights('b').values()))


def test_cifar10_trains_offline_from_files_in_the_images_folder(tmp_path):
    write_cifar(str(tmp_path / 'cifar10' / 'images'), per_batch=40, test_size=30)
    record = train.main(['--dataset', 'cifar10', '--path', str(tmp_path), '--num_epochs', '1', '--device', 'cpu',
                         '--batch_size', '50', '--input_norm', 'dataset', '--bn_weight', '1', '--c', '1'])
    assert (record['train_size'], record['val_size'], record['test_size']) == (180, 20, 30)
    assert list(record['input_mean']) == [0.4916, 0.4823, 0.4467]  # the paper's CIFAR-10 statistics
    assert (tmp_path / 'cifar10' / 'results' / 'cifar10_train_weight1.0_c1.0.json').exists()


def test_fashionmnist_offline_without_data_dir_reads_debians_package_and_says_so(tmp_path, monkeypatch, capsys):
    from revisiting_bn import data_files
    write_fashionmnist(str(tmp_path / 'debian'))
    monkeypatch.setattr(data_files, 'DEBIAN_FASHION_MNIST', str(tmp_path / 'debian'))
    record = train.main(['--dataset', 'fashionmnist', '--network', 'mlp', '--path', str(tmp_path / 'out'),
                         '--num_epochs', '1', '--device', 'cpu'])
    out = capsys.readouterr().out
    assert record['status'] == 'finished' and record['config']['data_dir'] is None
    assert f"Fashion-MNIST from Debian's dataset-fashion-mnist package in {tmp_path / 'debian'}" in out
    assert not (tmp_path / 'out' / 'fashionmnist' / 'images').exists()  # nothing downloaded, nothing copied


def test_fashionmnist_from_data_dir_with_dataset_statistics(tmp_path):
    write_fashionmnist(str(tmp_path / 'elsewhere'))
    record = train.main(['--dataset', 'fashionmnist', '--data_dir', str(tmp_path / 'elsewhere'), '--path',
                         str(tmp_path / 'out'), '--num_epochs', '1', '--device', 'cpu', '--input_norm', 'dataset'])
    # uniform random bytes: 180 x 784 values, so the mean's standard error is 0.0014
    assert record['input_mean'][0] == pytest.approx(127.5 / 255, abs=0.02) and len(record['input_std']) == 1
    assert files_under(tmp_path / 'out') == ['fashionmnist/networks/fashionmnist_train_weight0.1_c100-best.pt',
                                             'fashionmnist/networks/fashionmnist_train_weight0.1_c100-last.pt',
                                             'fashionmnist/results/fashionmnist_train_weight0.1_c100.csv',
                                             'fashionmnist/results/fashionmnist_train_weight0.1_c100.json',
                                             'fashionmnist/results/fashionmnist_train_weight0.1_c100.norm_statistics.csv',
                                             'fashionmnist/results/fashionmnist_train_weight0.1_c100.txt']


def original_loaders(root, batch_size, input_norm):
    """The original train.py's data: the CIFAR-10 files under ``root``, its split (NumPy's and torch's generators
    seeded with seed 0's hash, then put back), and its three loaders; and the validation set's size."""
    import pickle

    import numpy as np
    from sklearn.model_selection import train_test_split

    from conftest import original_loader
    from revisiting_bn.seeds import make_complex

    def read(files):
        batches = [pickle.load(open(os.path.join(root, 'cifar-10-batches-py', f), 'rb'), encoding='latin1')
                   for f in files]
        images = np.concatenate([b['data'] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, sum((b['labels'] for b in batches), [])

    mean, std = ([0.4916, 0.4823, 0.4467], [0.2472, 0.2437, 0.2618]) if input_norm == 'dataset' else (None, None)
    train_hwc, train_labels = read([f'data_batch_{i}' for i in range(1, 6)])
    test_hwc, test_labels = read(['test_batch'])
    states = np.random.get_state(), torch.get_rng_state()
    np.random.seed(make_complex(0)), torch.manual_seed(make_complex(0))
    train_index, val_index = train_test_split(np.arange(len(train_labels)), test_size=0.1, stratify=train_labels)
    np.random.set_state(states[0]), torch.set_rng_state(states[1])
    return {'train': original_loader(train_hwc, train_labels, batch_size, train_index, True, mean, std),
            'val': original_loader(train_hwc, train_labels, batch_size, val_index, False, mean, std),
            'test': original_loader(test_hwc, test_labels, batch_size, None, False, mean, std)}, len(val_index)


def original_evaluation(network, loaders, val_size):
    """The original's validation loss (summed, over the set's size) and its validation and test accuracy (sklearn)."""
    import numpy as np
    import torch.nn.functional as F
    from sklearn.metrics import accuracy_score
    network.eval()
    accuracies, validation_loss = [], 0.0
    with torch.no_grad():
        for part in ('val', 'test'):
            truth, predicted = [], []
            for images, labels in loaders[part]:
                outputs = network(images)
                if part == 'val':
                    validation_loss += F.cross_entropy(outputs, labels, reduction='sum').item()
                truth += labels.tolist()
                predicted += torch.max(outputs, 1)[1].tolist()
            accuracies.append(accuracy_score(np.array(truth, float), np.array(predicted, float)))
    return validation_loss / val_size, accuracies


def original_training(root, batch_size, num_epochs, bn_weight, c, input_norm, seed, name):
    """The original train.py's arithmetic on the CIFAR-10 files under ``root``: its split, loaders, network, groups,
    SGD, cosine schedule, loss and accuracy sums, best-by-validation weights and results file."""
    from conftest import original_network, original_parameter_groups
    from revisiting_bn.seeds import make_deterministic

    make_deterministic(seed)
    loaders, val_size = original_loaders(root, batch_size, input_norm)
    network = original_network('resnet18', 10, bn_weight, input_norm)
    parameters = original_parameter_groups(network, 1e-4, 0.1, c)  # weight decay > 0: the original's groups
    optimizer = torch.optim.SGD(parameters, lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_epochs, eta_min=1e-8)
    best, best_state, rows = 0.0, None, []
    for epoch in range(num_epochs):
        network.train()
        training_loss = 0.0
        for images, labels in loaders['train']:
            optimizer.zero_grad()
            loss = torch.nn.CrossEntropyLoss()(network(images), labels)
            loss.backward()
            optimizer.step()
            training_loss += loss.item()
        training_loss /= len(loaders['train'])
        scheduler.step()
        validation_loss, accuracies = original_evaluation(network, loaders, val_size)
        if accuracies[0] > best:
            best, best_state = accuracies[0], {k: v.clone() for k, v in network.state_dict().items()}
        rows.append(f'{epoch},{training_loss},{validation_loss},{accuracies[0] * 100.0},{accuracies[1] * 100.0} \n')
    settings = [('Name', name), ('Dataset', 'cifar10'), ('Network', 'resnet18'), ('Batch Size', batch_size),
                ('Num Epochs', num_epochs), ('Learning Rate', 0.1), ('LR Scheduler', 'cos'), ('Momentum', 0.9),
                ('Weight Decay', 0.0001), ('BN Intial Scale', bn_weight), ('LR Reduction Value', c),
                ('Input Normalization Method', input_norm)]
    text = ''.join(f'{label}: {value},,,, \n' for label, value in settings)
    return text + 'epoch,train_loss,val_loss,val_accuracy,test_accuracy \n' + ''.join(rows), best_state


@pytest.mark.parametrize('bn_weight, c, input_norm, epochs', [(0.1, 100.0, 'bn', 2), (1.0, 1.0, 'dataset', 1),
                                                             (-1.0, 0.5, 'bn', 1)])  # values the protocol replaces
def test_training_equals_the_original_code_bit_for_bit(tmp_path, bn_weight, c, input_norm, epochs):
    """train.py and the original training loop (above) on the same CIFAR-10 files and seed: the same results file,
    byte for byte, and the same best weights, bit for bit (CPU). This pins everything at once: the initial tensors,
    the split and its order, the batches and flips, the pixel arithmetic, the parameter groups, the schedule, the
    loss and accuracy sums and the best-epoch rule."""
    images = tmp_path / 'cifar10' / 'images'
    write_cifar(str(images), per_batch=10, test_size=20, classes=5)  # 45 training images: batches of 16, 16, 13
    flags = ['--dataset', 'cifar10', '--path', str(tmp_path), '--num_epochs', str(epochs), '--device', 'cpu',
             '--batch_size', '16', '--bn_weight', str(bn_weight), '--c', str(c), '--input_norm', input_norm,
             '--seed', '4', '--name', 'a']
    record = train.main(flags)
    expected_text, expected_best = original_training(str(images), 16, epochs, bn_weight, c, input_norm, '4', 'a')
    assert (tmp_path / 'cifar10' / 'results' / 'a.txt').read_text() == expected_text
    best = torch.load(tmp_path / 'cifar10' / 'networks' / 'a-best.pt', weights_only=True)
    assert list(best) == list(expected_best) and all(torch.equal(best[k], expected_best[k]) for k in best)
    assert record['best_epoch'] is not None and len(expected_text.splitlines()) == 13 + epochs


def test_a_value_the_protocol_replaces_is_said_recorded_and_compared_as_it_trains(tmp_path, capsys):
    """--bn_weight <= 0 trains as 1.0 and --c <= 1 as no reduction: said in one line each at the start, recorded as
    it trains (the given value beside it), and compared so by the run's identity check: --bn_weight -1 and 0 are one
    experiment; -1 and 1 are one with --input_norm dataset, two with the input BN (it starts at 1.0, not 0.58)."""
    record = run_in_process(tmp_path, '--bn_weight', '-1', '--c', '0.5', '--name', 'a')
    out = capsys.readouterr().out
    assert ('NOTE: --bn_weight -1 trains as bn_weight 1 (bn_weight <= 0 means the standard 1.0, as in the original '
            'code; the input BN starts at 1): recorded as bn_weight 1, the given -1 kept beside it') in out
    assert 'NOTE: --c 0.5 trains as c 1 (c <= 1 means no learning-rate reduction)' in out
    config = record['config']
    assert (config['bn_weight'], config['c'], config['input_bn_weight']) == (1.0, 1.0, 1.0)
    assert config['given'] == {'bn_weight': -1.0, 'c': 0.5} and config['name'] == 'a'
    again = run_in_process(tmp_path, '--bn_weight', '0', '--c', '1', '--name', 'a', '--resume')  # the same run
    assert again['status'] == 'finished' and 'nothing to do' in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        train.run([*FAST, '--num_epochs', '1', '--path', str(tmp_path) + '/', '--bn_weight', '1', '--c', '1',
                   '--name', 'a', '--resume'])
    assert refused.value.code == 2 and 'input_bn_weight: 1.0 -> 0.58' in capsys.readouterr().err
    flags = ['--input_norm', 'dataset', '--c', '1', '--name', 'b']
    run_in_process(tmp_path, '--bn_weight', '-1', *flags)
    assert run_in_process(tmp_path, '--bn_weight', '1', *flags, '--resume')['status'] == 'finished'
    default = run_in_process(tmp_path, '--bn_weight', '0')  # the default name stays the original's
    assert default['config']['name'] == 'fake_train_weight0.0_c100'


def test_train_only_bn_leaves_every_other_parameter_at_its_initial_value(tmp_path):
    """BN-only training's protocol: after training, every frozen parameter equals a freshly constructed network's (same
    seed) bit for bit, and every BN scale and shift (but the input BN's frozen shift) has moved."""
    from revisiting_bn.seeds import make_deterministic
    record = train.main(FAST + ['--num_epochs', '2', '--path', str(tmp_path), '--train_only_bn', '--seed', '7'])
    trained = torch.load(tmp_path / 'fake' / 'networks' / f"{record['config']['name']}-last.pt",
                         weights_only=True)['network']
    make_deterministic('7')
    fresh = construct_network('mlp', 10, 'fake', 0.1, 'bn')
    norms = {f'{name}.{p}' for name, m in fresh.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             for p in ('weight', 'bias')} - {'0.bias'}
    for name, initial in fresh.named_parameters():
        assert torch.equal(trained[name], initial) != (name in norms), name
    assert len(norms) == 5  # the input BN's scale, and two BN1d layers' scales and shifts


@pytest.mark.parametrize('flags, layers', [
    (['--network', 'resnet20', '--norm', 'mabn', '--batch_size', '4', '--mabn_real_batch', '8'], 'MABN2d'),
    (['--network', 'mlp', '--norm', 'none'], None),
])
def test_other_normalisations_train(tmp_path, flags, layers):
    record = train.main(['--dataset', 'fake', '--fake_size', '100', '--device', 'cpu', '--num_epochs', '1', '--path',
                         str(tmp_path), '--bn_weight', '1', '--c', '1', '--input_norm', 'dataset', *flags])
    state = torch.load(tmp_path / 'fake' / 'networks' / f"{record['config']['name']}-last.pt", weights_only=True)
    assert record['status'] == 'finished' and math.isfinite(record['epochs'][0]['train_loss'])
    if layers == 'MABN2d':  # its buffers trained and were saved: 23 steps of 4 images
        assert state['network']['bn1.iters'].tolist() == [23] and 'layer1.0.bn1.buffer_gz' in state['network']
    else:
        assert not any('running' in key for key in state['network'])


def test_split_seed_draws_another_validation_split_and_is_recorded_as_a_setting(tmp_path, capsys):
    """--split_seed 0 is the paper's split (the other tests pin it to the original code's); another seed draws
    another stratified 10%, recorded in the run's configuration and compared by its identity check."""
    from revisiting_bn.data import split_train_validation
    labels = torch.arange(200) % 10
    paper, other = (split_train_validation(labels.numpy(), seed)[1] for seed in (0, 3))
    assert len(paper) == len(other) == 20 and set(paper.tolist()) != set(other.tolist())
    assert sorted(torch.bincount(labels[other]).tolist()) == [2] * 10  # still stratified
    record = run_in_process(tmp_path, '--split_seed', '3', '--name', 'a')
    assert record['config']['split_seed'] == 3
    with pytest.raises(SystemExit) as refused:
        train.run([*FAST, '--num_epochs', '1', '--path', str(tmp_path) + '/', '--name', 'a', '--resume'])
    assert refused.value.code == 2 and 'split_seed: 3 -> 0' in capsys.readouterr().err
