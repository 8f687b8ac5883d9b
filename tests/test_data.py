"""Datasets from their real on-disk formats, clear errors for missing or corrupt files, and batches and a
validation split equal to the original code's."""
import os

import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

from conftest import FASHION_MNIST_DIR, original_loader, write_cifar, write_fashionmnist, write_idx
from revisiting_bn import data, data_files
from revisiting_bn.data import (DatasetError, ImageBatches, channel_mean_std, data_folder, load_dataset,
                                split_train_validation)
from revisiting_bn.seeds import make_complex


@pytest.mark.parametrize('name, classes', [('cifar10', 10), ('cifar100', 100)])
def test_cifar_read_from_the_real_on_disk_format(tmp_path, name, classes):
    written = write_cifar(str(tmp_path), name)
    data = load_dataset(name, str(tmp_path), download=False)
    first_file = 'data_batch_1' if name == 'cifar10' else 'train'
    n_train = sum(len(labels) for f, (_, labels) in written.items() if 'test' not in f)
    assert data.train_images.shape == (n_train, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (50, 3, 32, 32) and data.num_classes == classes
    raw, labels = written[first_file]
    # CIFAR rows are 1024 red, then 1024 green, then 1024 blue values, row-major
    assert torch.equal(data.train_images[1, 2], torch.from_numpy(raw[1, 2048:].reshape(32, 32)))
    assert data.train_labels[:len(labels)].tolist() == labels
    assert data.train_labels.dtype == torch.int64 and not data.is_fake


def test_cifar_missing_offline_and_corrupt_files(tmp_path):
    with pytest.raises(DatasetError, match=r'cifar10: no cifar-10-batches-py/\{data_batch_1,.*,test_batch\} in '
                                           r'.*nothing; put the extracted cifar-10-python.tar.gz'):
        load_dataset('cifar10', str(tmp_path / 'nothing'), download=False)
    assert not (tmp_path / 'nothing').exists()
    write_cifar(str(tmp_path))
    path = tmp_path / 'cifar-10-batches-py' / 'data_batch_3'
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match='corrupt dataset file .*data_batch_3'):
        load_dataset('cifar10', str(tmp_path), download=False)
    path.write_bytes(b'not a pickle at all')
    with pytest.raises(DatasetError, match='corrupt'):
        load_dataset('cifar10', str(tmp_path), download=False)


def test_cifar_labels_out_of_range_are_rejected(tmp_path):
    import pickle
    write_cifar(str(tmp_path))
    path = tmp_path / 'cifar-10-batches-py' / 'test_batch'
    batch = pickle.loads(path.read_bytes())
    batch['labels'][0] = 10
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetError, match='labels outside 0..9'):
        load_dataset('cifar10', str(tmp_path), download=False)


def test_fashionmnist_idx_files_plain_and_gzipped(tmp_path):
    arrays = write_fashionmnist(str(tmp_path))
    raw = tmp_path / 'FashionMNIST' / 'raw'
    os.remove(raw / 't10k-labels-idx1-ubyte.gz')
    write_idx(str(raw / 't10k-labels-idx1-ubyte'), arrays['t10k'][1], compress=False)
    data = load_dataset('fashionmnist', str(tmp_path), download=False)
    assert data.train_images.shape == (200, 1, 28, 28)
    assert torch.equal(data.train_images[:, 0], torch.from_numpy(arrays['train'][0]))
    assert data.test_labels.tolist() == arrays['t10k'][1].tolist()


@pytest.mark.parametrize('damage, message', [
    (lambda b: b[:len(b) // 2], 'holds'),
    (lambda b: b'\x00\x00\x09\x03' + b[4:], 'magic'),
    (lambda b: b[:6], 'corrupt'),
])
def test_fashionmnist_corrupt_idx(tmp_path, damage, message):
    arrays = write_fashionmnist(str(tmp_path))
    path = tmp_path / 'FashionMNIST' / 'raw' / 'train-images-idx3-ubyte.gz'
    os.remove(path)
    plain = path.with_suffix('')
    write_idx(str(plain), arrays['train'][0], compress=False)
    plain.write_bytes(damage(plain.read_bytes()))
    with pytest.raises(DatasetError, match=message):
        load_dataset('fashionmnist', str(tmp_path), download=False)


def test_real_fashionmnist_known_facts(fashion_mnist_root):
    data = load_dataset('fashionmnist', fashion_mnist_root, download=False)
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.train_labels[0] == 9 and data.test_labels[0] == 9  # both sets open with an ankle boot
    train_index, val_index = split_train_validation(data.train_labels.numpy())
    assert len(val_index) == 6000 and torch.bincount(data.train_labels[val_index]).tolist() == [600] * 10
    mean, std = channel_mean_std(data.train_images[train_index])
    # the published statistics of Fashion-MNIST's training set, 0.286 and 0.353, to the digits published
    assert mean[0] == pytest.approx(0.286, abs=0.002) and std[0] == pytest.approx(0.353, abs=0.002)


def test_validation_split_is_the_original_codes():
    """The original seeds NumPy's global generator with make_complex(0), splits with random_state=None, then puts
    the state back: same indices in the same (shuffled) order, and the caller's generators are untouched."""
    labels = np.repeat(np.arange(10), 50)
    np.random.default_rng(1).shuffle(labels)
    torch.manual_seed(3), np.random.seed(4)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy())
    train_index, val_index = split_train_validation(labels)
    assert torch.equal(torch.get_rng_state(), before[0]) and np.array_equal(np.random.get_state()[1], before[1])
    assert len(val_index) == 50 and len(train_index) == 450
    assert np.bincount(labels[val_index.numpy()]).tolist() == [5] * 10
    np.random.seed(make_complex(0))
    expected_train, expected_val = train_test_split(np.arange(500), test_size=0.1, stratify=labels)
    assert train_index.tolist() == expected_train.tolist() and val_index.tolist() == expected_val.tolist()
    assert train_index.tolist() != sorted(train_index.tolist())  # the order is train_test_split's, not sorted
    assert torch.equal(split_train_validation(labels)[1], val_index)


def test_channel_mean_std_is_exact():
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_mean_std(images)
    as_float = images.double().div(255).transpose(0, 1).reshape(3, -1)
    # Both float64, summed in different orders over 1920 values: at most 1920 x 2^-53 (2e-13) apart
    assert np.allclose(mean, as_float.mean(1).numpy(), rtol=0, atol=1e-12)
    assert np.allclose(std, as_float.std(1, unbiased=False).numpy(), rtol=0, atol=1e-12)


def test_fake_data_is_fixed_balanced_and_sized():
    a, b = load_dataset('fake', '', fake_size=300), load_dataset('fake', '', fake_size=300)
    assert a.is_fake and a.train_images.shape == (300, 3, 32, 32) and a.test_images.shape[0] == 60
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    assert torch.bincount(a.train_labels).tolist() == [30] * 10
    with pytest.raises(DatasetError, match='at least 100'):
        load_dataset('fake', '', fake_size=99)


@pytest.mark.parametrize('mean, std', [(None, None), ((0.4916, 0.4823, 0.4467), (0.2472, 0.2437, 0.2618))])
def test_batches_equal_the_original_data_loaders_bit_for_bit(mean, std):
    """Two epochs of training batches and an evaluation pass each: the same images (pixels, flips, order) and
    labels as DataLoader + RandomHorizontalFlip + ToTensor (+ Normalize), and torch's generator left in the same
    state, so the original's random stream (and every later epoch) is reproduced."""
    images = torch.randint(0, 256, (75, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(75)  # unique: a label names its image
    index = torch.from_numpy(np.random.default_rng(0).permutation(75)[:70])
    hwc = images.permute(0, 2, 3, 1).numpy()
    train_loader = original_loader(hwc, labels, 16, index.numpy(), train=True, mean=mean, std=std)
    test_loader = original_loader(hwc, labels, 16, mean=mean, std=std)
    ours_train = ImageBatches(images[index], labels[index], 'cpu', mean, std)
    ours_test = ImageBatches(images, labels, 'cpu', mean, std)
    torch.manual_seed(11)
    expected = [[(x, y) for x, y in loader] for loader in (train_loader, test_loader, train_loader, test_loader)]
    expected_next = torch.rand(4)
    torch.manual_seed(11)
    got = [[(x, y) for x, y, *_ in batches] for batches in (
        ours_train.shuffled(16), ours_test.in_order(16), ours_train.shuffled(16), ours_test.in_order(16))]
    assert torch.equal(torch.rand(4), expected_next)
    assert [len(epoch) for epoch in got] == [5, 5, 5, 5]  # 70 = 4 x 16 + 6: the last, smaller batch is kept
    for epoch_got, epoch_expected in zip(got, expected):
        for (x, y), (x_expected, y_expected) in zip(epoch_got, epoch_expected):
            assert torch.equal(y, y_expected) and torch.equal(x, x_expected)
    unflipped = ours_test._to_float(images)
    flipped = [not torch.equal(image, unflipped[k]) for x, y in got[0] for image, k in zip(x, y.tolist())]
    assert 15 < sum(flipped) < 55 and got[0][0][1].tolist() != got[2][0][1].tolist()  # flips, and a new order
    resumed = [y for _, y, _ in ImageBatches(images[index], labels[index], 'cpu').shuffled(16, start_batch=3)]
    assert len(resumed) == 2  # resuming mid-epoch skips the first batches but draws the epoch whole


def test_in_order_covers_every_image_once():
    images = torch.arange(103 * 3 * 2 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(103, 3, 2, 4)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    batches = ImageBatches(images, torch.arange(103), 'cpu', mean, std)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    in_order = list(batches.in_order(50))
    assert [len(y) for _, y in in_order] == [50, 50, 3] and batches.num_batches(25) == 5
    assert torch.equal(torch.cat([x for x, _ in in_order]), expected)
    assert torch.cat([y for _, y in in_order]).tolist() == list(range(103))


def test_a_download_lands_in_the_data_folder_only_when_it_succeeds(tmp_path, monkeypatch):
    """The download goes to a temporary folder first: a failure leaves the data folder as it was."""
    def fetch(name, folder):
        write_cifar(folder)

    monkeypatch.setattr('revisiting_bn.data_files._fetch', fetch)
    data = load_dataset('cifar10', str(tmp_path / 'new'))
    assert data.train_images.shape[0] == 200 and os.listdir(tmp_path / 'new') == ['cifar-10-batches-py']

    def broken(name, folder):
        write_cifar(folder)
        raise OSError('connection reset\nby peer')

    monkeypatch.setattr('revisiting_bn.data_files._fetch', broken)
    with pytest.raises(DatasetError, match='downloading it failed \\(connection reset by peer\\)'):
        load_dataset('cifar100', str(tmp_path / 'other'))
    assert not (tmp_path / 'other').exists()


def test_fashionmnist_found_straight_in_debians_folder():
    if not os.path.isdir(FASHION_MNIST_DIR):
        pytest.skip('Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)')
    assert load_dataset('fashionmnist', FASHION_MNIST_DIR, download=False).test_images.shape == (10000, 1, 28, 28)


def test_without_data_dir_fashionmnist_comes_from_debians_package_when_the_default_folder_lacks_it(tmp_path,
                                                                                                 monkeypatch):
    """Offline, --data_dir not given: Debian's dataset-fashion-mnist folder (its files straight in it) serves
    Fashion-MNIST, with one line saying so; a --data_dir given, files in the default folder, another dataset or no
    Debian package keep the folder as it is."""
    debian, default = tmp_path / 'debian', tmp_path / 'training' / 'fashionmnist' / 'images'
    debian.mkdir()
    for prefix, n in (('train', 20), ('t10k', 10)):
        write_idx(debian / f'{prefix}-images-idx3-ubyte.gz', np.zeros((n, 28, 28)))
        write_idx(debian / f'{prefix}-labels-idx1-ubyte.gz', np.arange(n) % 10)
    monkeypatch.setattr(data_files, 'DEBIAN_FASHION_MNIST', str(debian))
    folder, note = data_folder('fashionmnist', str(default), given=False)
    assert folder == str(debian) and note.startswith("Fashion-MNIST from Debian's dataset-fashion-mnist package in")
    assert load_dataset('fashionmnist', folder, download=False).train_images.shape == (20, 1, 28, 28)
    assert data_folder('fashionmnist', str(default), given=True) == (str(default), None)
    assert data_folder('cifar10', str(default), given=False) == (str(default), None)
    write_fashionmnist(str(default))
    assert data_folder('fashionmnist', str(default), given=False) == (str(default), None)
    monkeypatch.setattr(data_files, 'DEBIAN_FASHION_MNIST', str(tmp_path / 'not-installed'))
    assert data_folder('fashionmnist', str(tmp_path / 'empty'), given=False) == (str(tmp_path / 'empty'), None)


def test_a_split_once_drawn_is_kept_and_read_back_without_scikit_learn(tmp_path, monkeypatch):
    """The runs of a sweep draw the split once: the indices are kept in the cache (keyed by the labels, the seed and
    the fraction) and read back as they were drawn, in another process without importing scikit-learn."""
    import subprocess
    import sys
    from conftest import ROOT
    from revisiting_bn.data import split_cache_file, split_train_validation
    monkeypatch.setenv('REVISITING_BN_CACHE', str(tmp_path))
    labels = np.arange(300) % 10
    drawn = split_train_validation(labels, 4)
    assert os.path.exists(split_cache_file(labels, 4)) and not os.path.exists(split_cache_file(labels, 5))
    assert split_cache_file(labels, 4) != split_cache_file(labels[::-1].copy(), 4)
    code = ('import sys, numpy as np; from revisiting_bn.data import split_train_validation; '
            'train, val = split_train_validation(np.arange(300) % 10, 4); '
            'print("sklearn" in sys.modules, train.tolist()[:5], val.tolist()[:5])')
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'REVISITING_BN_CACHE': str(tmp_path)})
    assert done.stdout.split()[0] == 'False', done.stderr
    assert done.stdout.strip() == f'False {drawn[0].tolist()[:5]} {drawn[1].tolist()[:5]}'
    expected = train_test_split(np.arange(300), test_size=0.1, stratify=labels, random_state=make_complex(4))
    assert [d.tolist() for d in split_train_validation(labels, 4)] == [e.tolist() for e in expected]
