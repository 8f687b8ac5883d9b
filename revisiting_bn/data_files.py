"""A dataset's files on disk: where they are, whether they are readable, how they are fetched and read.

On-disk layout under the images folder (what torchvision's download produces):
  cifar10       cifar-10-batches-py/data_batch_1..5, test_batch
  cifar100      cifar-100-python/train, test
  fashionmnist  FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (or straight in the folder,
                as Debian's dataset-fashion-mnist package has them)
Nothing here imports torch (torchvision only to download): a sweep checks its data before any run, and decodes
gzipped files once for all its runs (decoded_for_runs).
"""
import contextlib
import gzip
import hashlib
import os
import pickle
import shutil
import tempfile

from .cli import RunError

__all__ = ['DEBIAN_FASHION_MNIST', 'DatasetError', 'CIFAR_FILES', 'FASHION_MNIST_STEMS', 'fashionmnist_files',
           'data_folder', 'download_dataset', 'data_problem', 'fetch_dataset', 'open_data_file', 'read_idx',
           'read_cifar_batches', 'train_labels', 'DECODED_ENV', 'decoded_for_runs']


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


DECODED_ENV = 'REVISITING_BN_DECODED'  # the folder of a sweep's decoded copies, set for its runs


def read_idx(path, expected_ndim):
    """An IDX file (the MNIST format: big-endian header, then uint8 data), plain or gzipped, as a writable uint8 array;
    from its decoded copy where the sweep that started this run made one (decoded_for_runs). DatasetError, in one line,
    for a corrupt file."""
    import numpy as np
    copy = _decoded_copy(path)
    if copy is not None and copy.ndim == expected_ndim:
        return copy
    try:
        with open_data_file(path) as f:
            raw = f.read()
        magic = int.from_bytes(raw[:4], 'big')
        ndim = magic & 0xFF
        if magic >> 8 != 0x08 or ndim != expected_ndim:
            raise ValueError(f'bad magic number {magic:#010x}')
        shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        if data.size != int(np.prod(shape)):
            raise ValueError(f'header says {shape} but holds {data.size} bytes')
        return data.reshape(shape).copy()  # frombuffer is read-only; torch wants writable memory
    except Exception as error:
        raise DatasetError(f'corrupt dataset file {path} ({type(error).__name__}: {error})') from None


def read_cifar_batches(paths, label_key):
    """(images uint8 (N, 3, 32, 32), labels int64) of CIFAR's pickled batch files, in order; DatasetError, in one
    line, for a corrupt file."""
    import numpy as np
    images, labels = [], []
    for path in paths:
        try:
            with open(path, 'rb') as f:
                batch = pickle.load(f, encoding='latin1')
            data = np.asarray(batch['data'], dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except Exception as error:  # truncated pickle, wrong keys, wrong sizes: all mean corrupt
            raise DatasetError(f'corrupt dataset file {path} ({type(error).__name__}: {error})') from None
    return np.concatenate(images), np.concatenate(labels)


def train_labels(name, root):
    """The official training set's labels (int64, in the files' order, as a run reads them) of dataset ``name`` in
    ``root``, or None for data without fixed files or files not there; DatasetError for a corrupt file."""
    if name in CIFAR_FILES:
        folder, train_files, _, label_key = CIFAR_FILES[name]
        paths = [os.path.join(root, folder, file) for file in train_files]
        return read_cifar_batches(paths, label_key)[1] if all(map(os.path.isfile, paths)) else None
    files = fashionmnist_files(root) if name == 'fashionmnist' else None
    return None if files is None else read_idx(files[1], 1).astype('int64')


def _decoded_name(path):
    """The name of a file's decoded copy: its own name and a digest of its real path, size and modification time, so
    that no other file, nor this one changed, ever matches the copy."""
    status = os.stat(path)
    key = f'{os.path.realpath(path)}\0{status.st_size}\0{status.st_mtime_ns}'
    return f'{os.path.basename(path)}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy'


def _decoded_copy(path):
    """The decoded copy of ``path`` in the folder DECODED_ENV names, or None where there is none (a run started
    otherwise than by a local sweep, or a copy gone or unreadable: the file itself is read then)."""
    folder = os.environ.get(DECODED_ENV)
    if not folder:
        return None
    import numpy as np
    try:
        copy = np.load(os.path.join(folder, _decoded_name(path)))
    except (OSError, ValueError, EOFError):
        return None
    return copy if copy.dtype == np.uint8 else None


@contextlib.contextmanager
def decoded_for_runs(datasets):
    """Within it, the gzipped files of ``datasets`` ({(name, data folder)}) are decoded once, into a temporary folder
    that DECODED_ENV names for the runs started within (they inherit the environment): each run then loads the bytes
    instead of paying gzip's decompression, 0.3 s for Fashion-MNIST on a 2-core Intel Xeon. A file that cannot be
    decoded is left to each run, which says what is wrong with it. The folder is removed on leaving."""
    import numpy as np
    folder, before = tempfile.mkdtemp(prefix='revisiting-bn-decoded-'), os.environ.get(DECODED_ENV)
    try:
        for name, root in datasets:
            files = (fashionmnist_files(root) or ()) if name == 'fashionmnist' else ()
            for path, stem in zip(files, FASHION_MNIST_STEMS):
                if path.endswith('.gz'):
                    with contextlib.suppress(RunError, OSError):  # a copy cut short is unreadable: its runs decode
                        np.save(os.path.join(folder, _decoded_name(path)), read_idx(path, 3 if 'images' in stem else 1))
        os.environ[DECODED_ENV] = folder
        yield folder
    finally:
        if before is None:
            os.environ.pop(DECODED_ENV, None)
        else:
            os.environ[DECODED_ENV] = before
        shutil.rmtree(folder, ignore_errors=True)


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
