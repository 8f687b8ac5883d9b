"""Bad input, table-driven: a one-line message naming the problem, a non-zero exit (2 for usage errors),
no traceback, and no output file."""
import os
import subprocess
import sys

import pytest
import torch

import train
from batch_norm import ScaleBatchNorm1d, ScaleBatchNorm2d
from conftest import FAST, ROOT, write_cifar, write_fashionmnist
from networks import construct_network
from t_test import evaluate
from weight_decay_and_learning_rate import adjust_weight_decay_and_learning_rate

NO_CUDA = not torch.cuda.is_available()


def truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


def overwrite(path, data):
    path.write_bytes(data)


# (flags, how to damage the data folder {tmp}/data, exit status, words the message must contain)
CLI_AND_DATA = [
    (['--dataset', 'cifar11'], None, 2, "invalid choice: 'cifar11'"),
    (['--network', 'resnet19'], None, 2, "invalid choice: 'resnet19'"),
    (['--scheduler', 'step'], None, 2, "invalid choice: 'step'"),
    (['--input_norm', 'layer'], None, 2, "invalid choice: 'layer'"),
    (['--precision', 'fp64'], None, 2, "invalid choice: 'fp64'"),
    (['--batch_size', '0'], None, 2, '--batch_size must be >= 1'),
    (['--batch_size', 'ten'], None, 2, "--batch_size: invalid int value: 'ten'"),
    (['--num_epochs', '0'], None, 2, '--num_epochs must be >= 1'),
    (['--num_epochs', '2.5'], None, 2, "--num_epochs: invalid int value: '2.5'"),
    (['--learning_rate', 'nan'], None, 2, '--learning_rate must be a finite number'),
    (['--learning_rate', 'inf'], None, 2, '--learning_rate must be a finite number'),
    (['--learning_rate', '-0.1'], None, 2, '--learning_rate must be a finite number >= 0'),
    (['--learning_rate', '0'], None, 2, '--learning_rate must be > 0'),
    (['--weight_decay', '-0.001'], None, 2, '--weight_decay must be a finite number >= 0'),
    (['--weight_decay', 'inf'], None, 2, '--weight_decay must be a finite number'),
    (['--momentum', '1.5'], None, 2, '--momentum must be in [0, 1)'),
    (['--momentum', '-0.1'], None, 2, '--momentum must be in [0, 1)'),
    (['--c', '-1'], None, 2, '--c must be a finite number >= 0'),
    (['--c', 'nan'], None, 2, '--c must be a finite number >= 0'),
    (['--bn_weight', 'nan'], None, 2, '--bn_weight must be finite'),
    (['--bn_weight', 'small'], None, 2, "--bn_weight: invalid float value: 'small'"),
    (['--seed', 'one'], None, 2, '--seed must be an integer'),
    (['--seed', '-3'], None, 2, '--seed must be an integer >= 0'),
    (['--seed', '1.5'], None, 2, '--seed must be an integer'),
    (['--fake_size', '10'], None, 2, '--fake_size must be >= 100'),
    (['--name', 'a/b'], None, 2, '--name must be a plain file name'),
    (['--device', 'gpu7'], None, 2, "--device 'gpu7' is not a torch device"),
    (['--device', 'cuda:0' if NO_CUDA else 'cuda:99'], None, 2, 'CUDA'),
    (['--precision', 'fp16', '--device', 'cpu'], None, 2, '--precision fp16 needs a CUDA device'),
    (['--resume', '--overwrite'], None, 2, '--resume and --overwrite contradict each other'),
    (['--change_num_epochs'], None, 2, '--change_num_epochs only applies with --resume'),
    (['--bnweight', '0.1'], None, 2, 'unrecognized arguments: --bnweight'),
    (['--bn', '0.5'], None, 2, 'unrecognized arguments: --bn 0.5'),  # no abbreviations of --bn_weight
    (['--num_epoch', '3'], None, 2, 'unrecognized arguments: --num_epoch 3'),
    (['--seed', '1_0'], None, 2, "--seed must be an integer >= 0 in decimal digits, got '1_0'"),
    (['--norm', 'none'], None, 2, '--norm none has no normalisation layer'),
    (['--norm', 'none', '--bn_weight', '1', '--c', '1', '--input_norm', 'dataset', '--train_only_bn'], None, 2,
     '--train_only_bn with --norm none would train nothing'),
    (['--norm', 'layer'], None, 2, "invalid choice: 'layer'"),
    (['--norm', 'mabn', '--network', 'mlp'], None, 2, '--norm mabn has no layer for the MLP'),
    (['--norm', 'mabn', '--network', 'resnet20', '--mabn_real_batch', '100'], None, 2,
     '--mabn_real_batch 100 must be a multiple of --batch_size 64'),
    (['--norm', 'mabn', '--network', 'resnet20', '--no_bn_running_stats'], None, 2, 'apply to --norm bn only'),
    (['--no_bn_affine'], None, 2, '--no_bn_affine removes the BN scale and shift'),
    (['--path', '{tmp}/file.txt/sub'], None, 1, 'is a file, not a folder'),
    (['--dataset', 'cifar10'], 'empty', 1, 'cifar10: no cifar-10-batches-py/{data_batch_1,data_batch_2,'
                                            'data_batch_3,data_batch_4,data_batch_5,test_batch} in {tmp}/data, and '
                                            'downloading it failed (Error downloading: Tried http://example, got: '
                                            '<urlopen error [Errno -2] Name or service not known>); put the '
                                            'extracted cifar-10-python.tar.gz'),
    (['--dataset', 'fashionmnist'], 'empty', 1, 'fashionmnist: no {train-images-idx3-ubyte,train-labels-idx1-ubyte,'
                                                't10k-images-idx3-ubyte,t10k-labels-idx1-ubyte}[.gz] in {tmp}/data or '
                                                '{tmp}/data/FashionMNIST/raw, and downloading it failed'),
    (['--dataset', 'cifar10'], 'cifar-truncated', 1, 'corrupt dataset file'),
    (['--dataset', 'cifar10'], 'cifar-garbage', 1, 'corrupt dataset file'),
    (['--dataset', 'cifar10'], 'cifar-one-missing', 1, 'cifar10: no cifar-10-batches-py/{data_batch_1'),
    (['--dataset', 'fashionmnist'], 'fashion-truncated', 1, 'corrupt dataset file'),
    (['--dataset', 'fashionmnist'], 'fashion-bad-magic', 1, 'bad magic number'),
]


def prepare_data_folder(folder, damage):
    folder.mkdir()
    if damage is None or damage == 'empty':
        return
    if damage.startswith('cifar'):
        write_cifar(str(folder))
        batch = folder / 'cifar-10-batches-py' / 'data_batch_4'
        {'cifar-truncated': lambda: truncate(batch, 3000), 'cifar-garbage': lambda: overwrite(batch, b'GIF89a...'),
         'cifar-one-missing': lambda: os.remove(batch)}[damage]()
    else:
        write_fashionmnist(str(folder))
        labels = folder / 'FashionMNIST' / 'raw' / 'train-labels-idx1-ubyte.gz'
        if damage == 'fashion-truncated':
            truncate(labels, 40)
        else:
            import gzip
            raw = gzip.decompress(labels.read_bytes())
            labels.write_bytes(gzip.compress(b'\x00\x00\x08\x07' + raw[4:]))


@pytest.mark.parametrize('flags, damage, status, message', CLI_AND_DATA,
                         ids=[' '.join(c[0]) + (f' [{c[1]}]' if c[1] else '') for c in CLI_AND_DATA])
def test_command_line_and_data(tmp_path, capsys, monkeypatch, flags, damage, status, message):
    (tmp_path / 'file.txt').write_text('x')
    prepare_data_folder(tmp_path / 'data', damage)
    # no internet here (maybe in CI): the download fails, with torchvision's kind of multi-line message
    def offline(name, folder):
        os.makedirs(os.path.join(folder, 'partial'))  # what a failed download leaves in its folder
        raise RuntimeError('Error downloading:\nTried http://example, got:\n<urlopen error [Errno -2] Name or '
                           'service not known>\n')

    monkeypatch.setattr('data._fetch', offline)
    before = sorted(os.listdir(tmp_path / 'data'))
    argv = FAST + ['--path', f'{tmp_path}/out/', '--data_dir', str(tmp_path / 'data')]
    argv += [flag.format(tmp=tmp_path) for flag in flags]
    with pytest.raises(SystemExit) as exit_info:
        train.run(argv)
    assert exit_info.value.code == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'Traceback' not in err[0]
    assert err[-1].startswith('train.py: error: ') and message.replace('{tmp}', str(tmp_path)) in err[-1]
    assert not (tmp_path / 'out').exists() and sorted(os.listdir(tmp_path / 'data')) == before


API = [
    (lambda: evaluate([1, 2, 3], [1, 2]), 'same length'),
    (lambda: evaluate([1, float('nan')], [1, 2]), 'non-finite'),
    (lambda: evaluate([1], [0]), 'at least 2 pairs'),
    (lambda: ScaleBatchNorm2d(3)(torch.randn(2, 3, 4)), 'ScaleBatchNorm2d expects a 4-D input'),
    (lambda: ScaleBatchNorm1d(3)(torch.randn(2, 3, 4, 4)), 'ScaleBatchNorm1d expects a 2-D or 3-D input'),
    (lambda: ScaleBatchNorm2d(3, bn_weight=float('inf')), 'bn_weight must be finite'),
    (lambda: construct_network('vgg16'), "unknown network 'vgg16'"),
    (lambda: construct_network(dataset='mnist'), "unknown dataset 'mnist'"),
    (lambda: adjust_weight_decay_and_learning_rate(torch.nn.Linear(2, 2), c=-1), 'c must be a finite number'),
]


@pytest.mark.parametrize('call, message', API, ids=[m for _, m in API])
def test_python_api(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value) and '\n' not in str(error.value)


def test_real_process_exit_status_and_no_traceback(tmp_path):
    completed = subprocess.run([sys.executable, 'train.py', '--batch_size', '-4', '--path', str(tmp_path / 'o')],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and 'Traceback' not in completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == 'train.py: error: --batch_size must be >= 1, got -4'
    assert not (tmp_path / 'o').exists()


TOOLS = [
    ('report.py', ['{tmp}/results', '--baseline', 'nosuch', '--out', '{tmp}/report'],
     '--baseline nosuch: no results of that configuration (found: proposed)'),
    ('sweep.py', ['--seeds', '5-1', '--dry_run', '--path', '{tmp}/sweep'], "--seeds '5-1': the range 5-1 is reversed"),
    ('sweep.py', ['--seed', '1', '--dry_run'], 'unrecognized arguments: --seed 1'),  # no abbreviation of --seeds
    ('t_test.py', ['--proposed', '1', '2', 'abc', '--baseline', '1', '2', '3'],
     "--proposed: 'abc' is neither a number nor a result file or folder"),
]


@pytest.mark.parametrize('tool, argv, message', TOOLS, ids=[f'{t} {" ".join(a)}' for t, a, _ in TOOLS])
def test_the_other_tools_refuse_bad_input_the_same_way(tmp_path, tool, argv, message):
    """sweep.py, report.py and t_test.py: one line, exit 2, no traceback, nothing created."""
    import json
    (tmp_path / 'results').mkdir()
    record = {'config': {'name': 'proposed_seed1', 'seed': '1'}, 'epochs': [], 'status': 'finished'}
    (tmp_path / 'results' / 'proposed_seed1.json').write_text(json.dumps(record))
    before = sorted(p.name for p in tmp_path.rglob('*'))
    completed = subprocess.run([sys.executable, tool, *[a.replace('{tmp}', str(tmp_path)) for a in argv]], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    err = completed.stderr.strip().splitlines()
    assert completed.returncode == 2 and len(err) == 1 and 'Traceback' not in completed.stderr
    assert err[0].startswith(f'{tool}: error: ') and message in err[0]
    assert sorted(p.name for p in tmp_path.rglob('*')) == before
