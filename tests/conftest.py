"""Shared helpers: the repository root on sys.path, and writers for the real on-disk dataset formats."""
import gzip
import os
import pickle
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'


def write_cifar(root, name='cifar10', per_batch=40, test_size=50, seed=0):
    """Write a small CIFAR-10/100 in torchvision's extracted on-disk format (pickled batches)."""
    rng = np.random.default_rng(seed)
    folder, files, label_key, classes = {
        'cifar10': ('cifar-10-batches-py', [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch'], 'labels', 10),
        'cifar100': ('cifar-100-python', ['train', 'test'], 'fine_labels', 100),
    }[name]
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    written = {}
    for file in files:
        n = test_size if 'test' in file else per_batch * (5 if name == 'cifar100' else 1)
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = (np.arange(n) % classes).tolist()
        batch = {'batch_label': file, 'data': data, label_key: labels, 'filenames': [f'{i}.png' for i in range(n)]}
        with open(os.path.join(root, folder, file), 'wb') as f:
            pickle.dump(batch, f, protocol=2)
        written[file] = (data, labels)
    return written


def write_idx(path, array, compress=True):
    """Write a uint8 array in the IDX format of (Fashion-)MNIST."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
    opener = gzip.open if compress else open
    with opener(path, 'wb') as f:
        f.write(header + array.tobytes())


def write_fashionmnist(root, train_size=200, test_size=50, seed=0):
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, 'FashionMNIST', 'raw')
    os.makedirs(raw, exist_ok=True)
    arrays = {}
    for prefix, n in (('train', train_size), ('t10k', test_size)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx(os.path.join(raw, f'{prefix}-images-idx3-ubyte.gz'), images)
        write_idx(os.path.join(raw, f'{prefix}-labels-idx1-ubyte.gz'), labels)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.fixture
def fashion_mnist_root(tmp_path):
    """A torchvision-style folder whose raw files are the Debian package's real Fashion-MNIST."""
    if not os.path.isdir(FASHION_MNIST_DIR):
        pytest.skip('Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)')
    raw = tmp_path / 'FashionMNIST' / 'raw'
    raw.mkdir(parents=True)
    for file in os.listdir(FASHION_MNIST_DIR):
        os.symlink(os.path.join(FASHION_MNIST_DIR, file), raw / file)
    return str(tmp_path)
