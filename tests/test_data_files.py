"""A dataset's files read without torch: the IDX and CIFAR readers, the training labels a sweep draws splits from,
and the decoded copies a local sweep makes once for its runs."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, write_cifar, write_fashionmnist
from revisiting_bn import data_files
from revisiting_bn.data import load_dataset
from revisiting_bn.data_files import DECODED_ENV, decoded_for_runs, read_idx, train_labels

RAW = ('FashionMNIST', 'raw')


def test_the_readers_and_the_labels_need_no_torch(tmp_path):
    write_fashionmnist(str(tmp_path / 'f'))
    write_cifar(str(tmp_path / 'c'), 'cifar10')
    code = ('import sys; from revisiting_bn.data_files import train_labels; '
            f'f = train_labels("fashionmnist", {str(tmp_path / "f")!r}); c = train_labels("cifar10", '
            f'{str(tmp_path / "c")!r}); print("torch" in sys.modules, f.dtype, f[:12].tolist(), c.dtype, len(c))')
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.split(' ', 1) == ['False', f'int64 {[i % 10 for i in range(12)]} int64 200\n'], done.stderr


def test_train_labels_are_the_labels_a_run_splits(tmp_path):
    """The same labels, in the same order and type, as the run's own: a split drawn from them is the run's split."""
    write_fashionmnist(str(tmp_path / 'f'))
    write_cifar(str(tmp_path / 'c'), 'cifar100')
    for name, root in (('fashionmnist', tmp_path / 'f'), ('cifar100', tmp_path / 'c')):
        labels, run = train_labels(name, str(root)), load_dataset(name, str(root), download=False).train_labels
        assert labels.dtype == run.numpy().dtype and labels.tolist() == run.tolist()
    assert train_labels('fashionmnist', str(tmp_path / 'absent')) is None and train_labels('fake', 'x') is None


def test_a_sweeps_decoded_copies_are_read_instead_of_the_gzipped_files_and_removed_after(tmp_path, monkeypatch):
    monkeypatch.delenv(DECODED_ENV, raising=False)
    arrays = write_fashionmnist(str(tmp_path))
    path = os.path.join(tmp_path, *RAW, 'train-images-idx3-ubyte.gz')
    with decoded_for_runs({('fashionmnist', str(tmp_path)), ('fake', None)}) as folder:
        assert os.environ[DECODED_ENV] == folder and len(os.listdir(folder)) == 4
        assert np.array_equal(read_idx(path, 3), arrays['train'][0]) and read_idx(path, 3).flags.writeable
        copy = os.path.join(folder, data_files._decoded_name(path))
        np.save(copy, np.full((200, 28, 28), 7, dtype=np.uint8))  # a marked copy: reading it shows it is read
        assert (read_idx(path, 3) == 7).all()
        os.utime(path, ns=(1, 1))  # the file changed since it was decoded: its copy no longer matches
        assert np.array_equal(read_idx(path, 3), arrays['train'][0])
    assert DECODED_ENV not in os.environ and not os.path.exists(folder)


def test_a_file_that_cannot_be_decoded_is_left_to_the_runs(tmp_path, monkeypatch):
    monkeypatch.delenv(DECODED_ENV, raising=False)
    write_fashionmnist(str(tmp_path))
    path = os.path.join(tmp_path, *RAW, 'train-labels-idx1-ubyte.gz')
    with open(path, 'wb') as f:
        f.write(b'not gzip')
    with decoded_for_runs({('fashionmnist', str(tmp_path))}) as folder:
        assert len(os.listdir(folder)) == 3
        with pytest.raises(data_files.DatasetError, match='corrupt dataset file .*train-labels-idx1-ubyte.gz'):
            read_idx(path, 1)
