"""A dataset's files on disk: where they are, whether they are there and readable, and how missing ones are fetched.

On-disk layout under the images folder (what torchvision's download produces):
  cifar10       cifar-10-batches-py/data_batch_1..5, test_batch
  cifar100      cifar-100-python/train, test
  fashionmnist  FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (or straight in the folder,
                as Debian's dataset-fashion-mnist package has them)
Nothing here imports torch (torchvision only to download): a sweep checks its data before any run.
"""
import gzip
import os
import shutil
import tempfile

from .cli import RunError

__all__ = ['DEBIAN_FASHION_MNIST', 'DatasetError', 'CIFAR_FILES', 'FASHION_MNIST_STEMS', 'fashionmnist_files',
           'data_folder', 'download_dataset', 'data_problem', 'fetch_dataset', 'open_data_file']


class DatasetError(RunError):
    """A dataset is missing, cannot be downloaded, or its files are corrupt."""


CIFAR_FILES = {
    'cifar10': ('cifar-10-batches-py', [f'data_batch_{i}' for i in range(1, 6)], ['test_batch'], 'labels'),
    'cifar100': ('cifar-100-python', ['train'], ['test'], 'fine_labels'),
}


FASHION_MNIST_STEMS = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
                        't10k-labels-idx1-ubyte')


def fashionmnist_files(root):
    """The four files under ``root`` (torchvision's layout, or straight in the folder as Debian's package has them),
    plain or gzipped, or None where one is missing."""
    def find(stem):
        for folder in (os.path.join(root, 'FashionMNIST', 'raw'), root):
            for candidate in (os.path.join(folder, stem), os.path.join(folder, stem + '.gz')):
                if os.path.isfile(candidate):
                    return candidate
        return None

    files = [find(stem) for stem in FASHION_MNIST_STEMS]
    return files if all(files) else None


DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'  # Debian's dataset-fashion-mnist package


def _how_to_get(name):
    """Where a dataset's files come from when they cannot be downloaded here, as the end of a message."""
    if name == 'fashionmnist':
        return (f"; Debian's dataset-fashion-mnist package installs them in {DEBIAN_FASHION_MNIST}"
                + (' (present here): pass --data_dir there' if os.path.isdir(DEBIAN_FASHION_MNIST) else ''))
    archive = name.replace('cifar', 'cifar-')
    return f'; put the extracted {archive}-python.tar.gz (its {CIFAR_FILES[name][0]} folder) there'


def data_folder(name, folder, given):
    """Where to read dataset ``name``: ``folder``, except for Fashion-MNIST when no --data_dir was ``given``, ``folder``
    lacks its files and Debian's dataset-fashion-mnist package has them (the same files torchvision downloads): then
    Debian's folder, offline. Returns (folder, the line that says so, or None)."""
    if given or name != 'fashionmnist' or fashionmnist_files(folder) or not fashionmnist_files(DEBIAN_FASHION_MNIST):
        return folder, None
    return DEBIAN_FASHION_MNIST, (f"Fashion-MNIST from Debian's dataset-fashion-mnist package in {DEBIAN_FASHION_MNIST} "
                                  f"(--data_dir reads another folder)")


def _fetch(name, folder):
    """torchvision's own download and md5-checked extraction of ``name`` into ``folder``."""
    import torchvision.datasets as tv
    {'cifar10': tv.CIFAR10, 'cifar100': tv.CIFAR100, 'fashionmnist': tv.FashionMNIST}[name](
        root=folder, train=True, download=True)


def download_dataset(name, root, download, missing, where=None):
    """Download ``name`` into ``root``, or raise DatasetError with one line naming what was looked for where.

    The download goes to a temporary folder first: nothing is created in ``root`` unless it
    succeeds (a data folder may be a system folder, or shared).
    """
    hint = _how_to_get(name)
    lacking = f'{name}: no {missing} in {where or root}'
    if not download:
        raise DatasetError(lacking + hint)
    temporary = tempfile.mkdtemp(prefix=f'{name}-download-')
    try:
        _fetch(name, temporary)
        os.makedirs(root, exist_ok=True)
        for entry in os.listdir(temporary):
            shutil.move(os.path.join(temporary, entry), os.path.join(root, entry))
    except Exception as error:
        reason = ' '.join(str(error).split()) or type(error).__name__  # one line, whatever torchvision said
        raise DatasetError(f'{lacking}, and downloading it failed ({reason}){hint}') from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def open_data_file(path):
    """A dataset file opened for reading its bytes, gzipped ones (name ending .gz) as they were before gzip."""
    return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def _unreadable(path, check):
    """Why the file at ``path`` cannot be the dataset file ``check`` expects (its first bytes), or None."""
    try:
        with open_data_file(path) as f:
            head = f.read(4)
    except (OSError, EOFError) as error:
        return f'cannot read {path} ({type(error).__name__}: {error})'
    return None if check(head) else f'{path} is not a dataset file of this kind (its first bytes are {head!r})'


def _dataset_files(name, root):
    """(the dataset's files under ``root``, a check of a file's first bytes, what the files are called), or None for
    the files of a dataset that has no fixed files."""
    if name in CIFAR_FILES:
        folder, train_files, test_files, _ = CIFAR_FILES[name]
        return ([os.path.join(root, folder, f) for f in train_files + test_files], lambda head: head[:1] == b'\x80',
                f'{folder}/{{{",".join(train_files + test_files)}}}')
    if name == 'fashionmnist':
        files = fashionmnist_files(root) or [os.path.join(root, stem) for stem in FASHION_MNIST_STEMS]
        return files, lambda head: len(head) == 4 and head[2] == 0x08, f'{{{",".join(FASHION_MNIST_STEMS)}}}[.gz]'
    return None


def data_problem(name, root):
    """Why dataset ``name`` cannot be read from ``root`` as it is (one line: its files missing, or unreadable by their
    first bytes), or None; nothing is downloaded or loaded. A folder of images is checked by its layout."""
    if name == 'folder':
        from .image_folder import scan
        try:
            scan(root)
        except RunError as error:
            return str(error)
        return None
    files = _dataset_files(name, root)
    if files is None:
        return None
    paths, check, called = files
    if not all(os.path.isfile(path) for path in paths):
        return f'{name}: no {called} in {root}{_how_to_get(name)}'
    return next(filter(None, (_unreadable(path, check) for path in paths)), None)


def fetch_dataset(name, root):
    """Make dataset ``name`` readable from ``root`` before any run needs it: nothing to do where it is there; missing
    files are downloaded once (torchvision's download, into a temporary folder first); DatasetError with one line
    where they cannot be had or read."""
    problem = data_problem(name, root)
    files = _dataset_files(name, root)
    if problem and files and not all(os.path.isfile(path) for path in files[0]):
        download_dataset(name, root, True, files[2])
        problem = data_problem(name, root)
    if problem:
        raise DatasetError(problem)
