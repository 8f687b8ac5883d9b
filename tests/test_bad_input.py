"""Bad input, table-driven: a one-line message naming the problem, a non-zero exit (2 for usage errors),
no traceback, and no output file."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from revisiting_bn.batch_norm import ScaleBatchNorm1d, ScaleBatchNorm2d, convert_to_scale_batch_norm
from conftest import FAST, ROOT, write_cifar, write_fashionmnist, write_image_folder
from revisiting_bn.networks import construct_network
from revisiting_bn.t_test import evaluate
from revisiting_bn.weight_decay_and_learning_rate import adjust_weight_decay_and_learning_rate

NO_CUDA = not torch.cuda.is_available()


def truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


def overwrite(path, data):
    path.write_bytes(data)


# (flags, how to damage the data folder {tmp}/data, exit status, words the message must contain)
CLI_AND_DATA = [
    (['--dataset', 'cifar11'], None, 2, "invalid choice: 'cifar11'"),
    (['--network', 'resnet19'], None, 2, "unknown network 'resnet19'; choose one of resnet18,"),
    (['--network', 'tv:resnet19'], None, 2, "unknown network 'tv:resnet19': torchvision has no classification network"),
    (['--network', 'tv:alexnet'], None, 2, "tv:alexnet has no batch norm layer, so the paper's method has nothing to "
                                           "act on"),
    (['--network', 'tv:mobilenet_v2', '--norm', 'mabn'], None, 2, "tv:mobilenet_v2 keeps its own BN layers' settings"),
    (['--network', 'tv:inception_v3'], None, 2, 'tv:inception_v3 cannot take 32x32 images'),
    (['--image_size', '32'], None, 2, '--image_size applies to --dataset folder only'),
    (['--dataset', 'folder', '--data_dir', ''], None, 2, '--dataset folder needs --data_dir ROOT'),
    (['--dataset', 'folder'], 'empty', 1, '{tmp}/data: no train/ folder; --dataset folder expects'),
    (['--dataset', 'folder'], 'folder-no-test', 1, '{tmp}/data: no test/ folder'),
    (['--dataset', 'folder'], 'folder-empty-class', 1, '{tmp}/data/train/zebra has no image (.jpg'),
    (['--dataset', 'folder'], 'folder-extra-test-class', 1, "{tmp}/data/test has class 'zebra' that {tmp}/data/train "
                                                            "lacks"),
    (['--dataset', 'folder'], 'folder-text-file', 1, '{tmp}/data/train/c1/notes.png is not an image Pillow can read'),
    (['--dataset', 'folder'], 'folder-truncated', 1, '{tmp}/data/train/c0/3.png is a damaged image'),
    (['--dataset', 'folder', '--image_size', '200000'], 'folder', 1, "the folder's 36 images at 1x200000x200000 take 1341.1 GiB as uint8, more than 80% of the"),
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
    (['--threads', '0'], None, 2, '--threads must be >= 1'),
    (['--threads', 'all'], None, 2, "--threads: invalid int value: 'all'"),
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
    (['--name', ' '], None, 2, '--name must be a plain file name (no /, not blank, no control characters'),
    (['--name', 'a\nb'], None, 2, "no control characters such as a newline), got 'a\\nb'"),
    (['--name', 'x' * 300], None, 2, '--name must be at most 200 bytes long'),
    (['--name', ' padded'], None, 2, '--name must not start or end with a space'),
    (['--path', 'a\0b'], None, 2, '--path must not contain a NUL character'),
    (['--data_dir', 'a\0b'], None, 2, '--data_dir must not contain a NUL character'),
    (['--device', 'meta'], None, 2, '--device meta holds no data (it only tracks shapes): train on cpu or cuda'),
    (['--device', 'xla'], None, 2, '--device xla is not available on this machine'),
    (['--dataset', 'fashionmnist', '--data_dir', '{tmp}/file.txt'], None, 1,
     '{tmp}/file.txt is a file, not a folder of fashionmnist files'),
    (['--batch_size', '1'], None, 2, '--batch_size 1: every training batch would hold 1 image, and batch norm '
                                     'cannot train on one value per channel (ScaleBatchNorm1d'),
    (['--batch_size', '179'], None, 2, '--batch_size 179: the last training batch would hold 1 image (180 = 179 x 1 '
                                       '+ 1), and batch norm cannot train on one value per channel'),
    (['--fake_size', '230', '--batch_size', '103'], None, 2, 'batch sizes near 103 that work: 102, 104'),
    (['--fake_size', '10000000000'], None, 1, 'not enough memory'),
]


def prepare_data_folder(folder, damage):
    folder.mkdir()
    if damage is None or damage == 'empty':
        return
    if damage.startswith('folder'):
        noise = np.random.default_rng(0).integers(0, 256, (30, 20, 20), dtype=np.uint8)  # PNGs that do not shrink
        write_image_folder(folder, 'train', noise, np.arange(30) % 3)
        write_image_folder(folder, 'test', np.zeros((6, 20, 20), np.uint8), np.arange(6) % 3)
        {'folder': lambda: None, 'folder-no-test': lambda: shutil.rmtree(folder / 'test'),
         'folder-empty-class': lambda: (folder / 'train' / 'zebra').mkdir(),
         'folder-extra-test-class': lambda: shutil.copytree(folder / 'test' / 'c0', folder / 'test' / 'zebra'),
         'folder-text-file': lambda: (folder / 'train' / 'c1' / 'notes.png').write_text('my notes'),
         'folder-truncated': lambda: truncate(folder / 'train' / 'c0' / '3.png', 250)}[damage]()
    elif damage.startswith('cifar'):
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

    monkeypatch.setattr('revisiting_bn.data_files._fetch', offline)
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
    (lambda: construct_network('tv:squeezenet1_0'), 'tv:squeezenet1_0 has no batch norm layer'),
    (lambda: construct_network(dataset='mnist'), "unknown dataset 'mnist'"),
    (lambda: adjust_weight_decay_and_learning_rate(torch.nn.Linear(2, 2), c=-1), 'c must be a finite number'),
    (lambda: evaluate([91, 92, 93], [90, 91, 92]), 'every paired difference is +1 (zero variance)'),
    (lambda: evaluate([91.7, 93.4, 92.4], [91.0, 92.7, 91.7]), 'every paired difference is +0.7 (zero variance)'),
    (lambda: convert_to_scale_batch_norm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4))),
     'Sequential has no batch-norm layer, so the method has nothing to act on (its normalisation layers are not batch '
     'norm: 1 (GroupNorm))'),
    (lambda: convert_to_scale_batch_norm(torch.nn.Sequential(torch.nn.LazyBatchNorm2d())),
     'LazyBatchNorm2d has no size yet'),
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


TRUNCATED = '{"config": {"name": "proposed_seed2", "seed": "2"}, "epo'
# (tool, flags, exit status, words the one line must contain, files written first beside proposed_seed1.json)
TOOLS = [
    ('report.py', ['{tmp}/results', '--baseline', 'nosuch', '--out', '{tmp}/report'], 2,
     '--baseline nosuch: no results of that configuration (found: proposed)', {}),
    ('report.py', ['{tmp}/results', '--baseline', 'proposed', '--out', '{tmp}/report'], 1,
     'cannot read 1 results file: {tmp}/results/proposed_seed2.json (JSONDecodeError',
     {'proposed_seed2.json': TRUNCATED}),
    ('report.py', ['{tmp}/nothing', '--out', '{tmp}/report'], 1, '{tmp}/nothing: no such file or folder', {}),
    ('sweep.py', ['--seeds', '5-1', '--dry_run', '--path', '{tmp}/sweep'], 2,
     "--seeds '5-1': the range 5-1 is reversed", {}),
    ('sweep.py', ['--seed', '1', '--dry_run'], 2, 'unrecognized arguments: --seed 1', {}),  # no abbreviation
    ('sweep.py', ['--config', 'baseline=--bn_weight 0.5', '--dry_run', '--path', '{tmp}/sweep'], 2,
     "--config baseline: 'baseline' is built in (--bn_weight 1 --c 1 --input_norm dataset); give your configuration "
     "another name", {}),
    ('sweep.py', ['--config_file', '{tmp}/results/configs.json', '--dry_run', '--path', '{tmp}/sweep'], 2,
     "--config_file proposed: 'proposed' is built in", {'configs.json': '{"proposed": "--bn_weight 0.2"}'}),
    ('sweep.py', ['--cpu_jobs', '0', '--dry_run', '--path', '{tmp}/sweep'], 2, '--cpu_jobs and --threads must be >= 1',
     {}),
    ('sweep.py', ['--dry_run', '--path', '{tmp}/sweep', '--', '--threads', '4'], 2,
     "--threads is set by the sweep for every run; leave it out (sweep.py's own --threads, before --, sets it)", {}),
    ('t_test.py', ['--proposed', '1', '2', 'abc', '--baseline', '1', '2', '3'], 2,
     "--proposed: 'abc' is neither a number nor a result file or folder", {}),
    ('t_test.py', ['--proposed', '91', '92', '93', '--baseline', '90', '91', '92'], 2,
     'every paired difference is +1 (zero variance): the t statistic divides by their spread, so it is undefined', {}),
    ('t_test.py', ['--proposed', '{tmp}/results', '--baseline', '{tmp}/results'], 2,
     'cannot read 1 results file', {'proposed_seed2.json': TRUNCATED}),
    ('bench.py', ['--device', 'meta'], 2, '--device meta holds no data', {}),
]


@pytest.mark.parametrize('tool, argv, status, message, files', TOOLS,
                         ids=[f'{t} {" ".join(a)}' for t, a, _, _, _ in TOOLS])
def test_the_other_tools_refuse_bad_input_the_same_way(tmp_path, tool, argv, status, message, files, monkeypatch,
                                                        capsys):
    """sweep.py, report.py, t_test.py and bench.py run as scripts (their __main__ blocks, in this process; one real
    process per tool is below): one line, the exit status, no traceback, nothing created."""
    import json
    import runpy
    (tmp_path / 'results').mkdir()
    record = {'config': {'name': 'proposed_seed1', 'seed': '1'}, 'epochs': [], 'status': 'finished'}
    (tmp_path / 'results' / 'proposed_seed1.json').write_text(json.dumps(record))
    for name, text in files.items():
        (tmp_path / 'results' / name).write_text(text)
    before = sorted(p.name for p in tmp_path.rglob('*'))
    monkeypatch.setattr(sys, 'argv', [tool, *[a.replace('{tmp}', str(tmp_path)) for a in argv]])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(os.path.join(ROOT, tool), run_name='__main__')
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == status and len(err) == 1 and 'Traceback' not in err[0], err
    assert err[0].startswith(f'{tool}: error: ') and message.replace('{tmp}', str(tmp_path)) in err[0]
    assert sorted(p.name for p in tmp_path.rglob('*')) == before


@pytest.mark.parametrize('tool, argv, message', [
    ('sweep.py', ['--seeds', '5-1', '--dry_run'], "--seeds '5-1': the range 5-1 is reversed"),
    ('report.py', ['{tmp}/nothing'], '{tmp}/nothing: no such file or folder'),
    ('t_test.py', ['--proposed', '1', '2', 'abc', '--baseline', '1', '2', '3'], "'abc' is neither a number"),
    ('bench.py', ['--device', 'meta'], '--device meta holds no data'),
])
def test_the_other_tools_as_real_processes(tmp_path, tool, argv, message):
    completed = subprocess.run([sys.executable, tool, *[a.replace('{tmp}', str(tmp_path)) for a in argv]], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    err = completed.stderr.strip().splitlines()
    assert completed.returncode in (1, 2) and len(err) == 1 and 'Traceback' not in completed.stderr, err
    assert err[0].startswith(f'{tool}: error: ') and message.replace('{tmp}', str(tmp_path)) in err[0]


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    """A finished 2-epoch MLP run under the default name, as the README's quick start leaves it."""
    folder = tmp_path_factory.mktemp('finished')
    train.main(FAST + ['--num_epochs', '2', '--path', f'{folder}/'])
    return folder


# (flags for a second train.py under the same --path and default --name, exit status, words of its one line)
AFTER_A_RUN = [
    (['--network', 'resnet20'], 2, "already holds the results of a different experiment in {out}/fake/results "
                                   "(network: 'mlp' -> 'resnet20'): give this run its own --name"),
    (['--network', 'resnet20', '--overwrite'], 2, '(--overwrite replaces a run of the same experiment only)'),
    (['--seed', '2'], 2, "(seed: '1' -> '2'): give this run its own --name"),
    (['--num_epochs', '3'], 2, '(num_epochs: 2 -> 3): give this run its own --name; --resume --change_num_epochs '
                               'continues it to the new number of epochs'),
    (['--num_epochs', '1', '--overwrite'], 2, '(num_epochs: 2 -> 1)'),
    (['--resume', '--network', 'resnet20'], 2, 'cannot resume fake_train_weight0.1_c100: its checkpoint was made '
                                               "with other settings (network: 'mlp' -> 'resnet20')"),
    ([], 2, 'already has finished results in {out}/fake/results: add --resume to continue it, or --overwrite'),
]


@pytest.mark.parametrize('flags, status, message', AFTER_A_RUN, ids=[' '.join(f) or 'same' for f, _, _ in AFTER_A_RUN])
def test_a_second_run_under_the_same_name_leaves_the_first_as_it_was(finished_run, tmp_path, capsys, flags, status,
                                                                     message):
    """The README's next steps without their own --name: refused in one line that says what differs, and the
    finished run's files are left byte for byte."""
    import shutil
    out = tmp_path / 'out'
    shutil.copytree(finished_run, out)
    before = {p: p.read_bytes() for p in out.rglob('*') if p.is_file()}
    with pytest.raises(SystemExit) as exit_info:
        train.run(FAST + ['--num_epochs', '2', '--path', f'{out}/', *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == status and len(err) == 1 and message.format(out=out) in err[0], err
    assert {p: p.read_bytes() for p in out.rglob('*') if p.is_file()} == before


def test_a_full_disk_ends_in_one_line_and_leaves_the_last_epoch_resumable(tmp_path):
    """A real full disk (a 3.5 MB tmpfs: room for epoch 1's files, not for epoch 2's new checkpoint beside them; root
    may mount one): one line naming the folder, exit 1, the first
    epoch's files intact, the JSON saying 'failed', and --resume continuing once there is room."""
    import json
    disk = tmp_path / 'disk'
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3500k', 'tmpfs', str(disk)],
                                           capture_output=True).returncode:
        pytest.skip('mounting a small tmpfs needs root')
    try:
        argv = [sys.executable, 'train.py', *FAST, '--num_epochs', '3', '--path', f'{disk}/', '--fake_size', '2000']
        completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
        err = completed.stderr.strip().splitlines()
        assert completed.returncode == 1 and len(err) == 1 and 'Traceback' not in completed.stderr, err
        assert err[0].startswith(f'train.py: error: no space left on device in {disk}/fake/networks (writing ')
        record = json.loads((disk / 'fake/results/fake_train_weight0.1_c100.json').read_text())
        assert record['status'] == 'failed' and record['error'].startswith('no space left') and record['epochs']
        subprocess.run(['mount', '-o', 'remount,size=20m', str(disk)], check=True)
        resumed = subprocess.run(argv + ['--resume'], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert json.loads((disk / 'fake/results/fake_train_weight0.1_c100.json').read_text())['status'] == 'finished'
    finally:
        subprocess.run(['umount', str(disk)], capture_output=True)
