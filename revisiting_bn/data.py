"""Datasets as uint8 tensors, the paper's validation split, and tensor-op batching.

Every dataset is read once into memory as uint8 (N, C, H, W). ``ImageBatches``
keeps it on the training device and builds each batch with a few tensor ops
(gather, flip, scale), so no DataLoader workers or per-image PIL transforms are
involved, on CPU or GPU.

The files on disk, where they are and how they are fetched: data_files.py; your own images
(train/<class>/..., test/<class>/...): image_folder.py.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch

from .data_files import (CIFAR_FILES, DEBIAN_FASHION_MNIST, FASHION_MNIST_STEMS, DatasetError,  # noqa: F401
                         data_folder, data_problem, download_dataset, fashionmnist_files, fetch_dataset,
                         read_cifar_batches, read_idx)
from .names import TRAINABLE_DATASETS
from .protocol import FAKE_MIN_SIZE, FAKE_SIZE, VALIDATION_SPLIT_SEED
from .seeds import make_complex
from .split import SPLIT_CACHE_ENV, draw_split, split_cache_file  # noqa: F401

__all__ = ['SMALL_IMAGE_MAX', 'DatasetInfo', 'DATASETS', 'TRAINABLE_DATASETS', 'PAPER_CIFAR10_MEAN',
           'PAPER_CIFAR10_STD', 'DatasetError', 'ImageData', 'data_folder', 'data_problem', 'fetch_dataset', 'load_dataset',
           'split_train_validation', 'channel_mean_std', 'ImageBatches']


# Images up to this size (CIFAR's 32, Fashion-MNIST's 28, up to 64) get the paper's 3x3 stride-1 ResNet stem without
# max-pool; larger ones torchvision's 7x7 stride-2 stem and max-pool, which would shrink a small image 4x at once.
SMALL_IMAGE_MAX = 64


@dataclass(frozen=True)
class DatasetInfo:
    channels: int
    image_size: int
    num_classes: int

    @property
    def small_images(self):
        """Whether the ResNets get the CIFAR-style 3x3 stem without max-pool."""
        return self.image_size <= SMALL_IMAGE_MAX


DATASETS = {
    'cifar10': DatasetInfo(3, 32, 10),
    'cifar100': DatasetInfo(3, 32, 100),
    'fashionmnist': DatasetInfo(1, 28, 10),
    'fake': DatasetInfo(3, 32, 10),
    'imagenet': DatasetInfo(3, 224, 1000),  # network construction only
}
# The per-channel statistics the paper uses for --input_norm dataset on CIFAR-10.
PAPER_CIFAR10_MEAN = (0.4916, 0.4823, 0.4467)
PAPER_CIFAR10_STD = (0.2472, 0.2437, 0.2618)
FAKE_DATA_SEED = 'fake data'


@dataclass
class ImageData:
    train_images: torch.Tensor  # uint8 (N, C, H, W), the full official training set
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    is_fake: bool = False
    classes: tuple = None  # the class names, where the dataset has them (a folder's)

    @property
    def info(self):
        """What a network needs to know of the data: channels, image size, classes."""
        return DatasetInfo(self.train_images.shape[1], self.train_images.shape[-1], self.num_classes)


def _checked(name, images, labels, num_classes, where):
    info = DATASETS[name]
    expected = (info.channels, info.image_size, info.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise DatasetError(f'{where}: expected images of shape (N, {", ".join(map(str, expected))}), '
                           f'got {tuple(images.shape)}')
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise DatasetError(f'{where}: {images.shape[0]} images but {labels.shape[0]} labels')
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DatasetError(f'{where}: labels outside 0..{num_classes - 1}')
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))


# ----------------------------------------------------------------------------- CIFAR


def _load_cifar(name, root, download):
    folder, train_files, test_files, label_key = CIFAR_FILES[name]
    base = os.path.join(root, folder)
    paths = [os.path.join(base, f) for f in train_files + test_files]
    if not all(os.path.isfile(p) for p in paths):
        download_dataset(name, root, download, f'{folder}/{{{",".join(train_files + test_files)}}}')
    train = read_cifar_batches(paths[:len(train_files)], label_key)
    test = read_cifar_batches(paths[len(train_files):], label_key)
    num_classes = DATASETS[name].num_classes
    return ImageData(*_checked(name, *train, num_classes, base), *_checked(name, *test, num_classes, base),
                     num_classes)


# ----------------------------------------------------------------------------- Fashion-MNIST


def _load_fashionmnist(root, download):
    files = fashionmnist_files(root)
    if files is None:
        raw = os.path.join(root, 'FashionMNIST', 'raw')
        download_dataset('fashionmnist', root, download, f'{{{",".join(FASHION_MNIST_STEMS)}}}[.gz]', f'{root} or {raw}')
        files = fashionmnist_files(root)
    train_images, train_labels, test_images, test_labels = (
        read_idx(file, 3 if 'images' in stem else 1) for file, stem in zip(files, FASHION_MNIST_STEMS))
    train = _checked('fashionmnist', train_images[:, None], train_labels, 10, f'{files[0]} and {files[1]}')
    test = _checked('fashionmnist', test_images[:, None], test_labels, 10, f'{files[2]} and {files[3]}')
    return ImageData(*train, *test, 10)


# ----------------------------------------------------------------------------- download and fake


def _make_fake(size):
    """Random CIFAR-shaped images with balanced random labels: for speed and smoke tests only."""
    if size < FAKE_MIN_SIZE:
        raise DatasetError(f'fake data needs at least {FAKE_MIN_SIZE} training images, got {size}')
    generator = torch.Generator().manual_seed(make_complex(FAKE_DATA_SEED))

    def draw(n):
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
        labels = (torch.arange(n) % 10)[torch.randperm(n, generator=generator)]
        return images, labels

    return ImageData(*draw(size), *draw(max(size // 5, 10)), 10, is_fake=True)


def load_dataset(name, root, download=True, fake_size=FAKE_SIZE, image_size=None, cache_dir=None, device_type='cpu',
                 log=None):
    """Load a dataset's official train and test sets as uint8 tensors.

    Files already under ``root`` are used as they are (offline training); missing
    ones are downloaded with torchvision when ``download`` is true. Raises
    DatasetError with a one-line reason otherwise. A folder of your own images
    (``name='folder'``) is resized to ``image_size`` and cached in ``cache_dir``
    (image_folder.load_folder).
    """
    if name == 'fake':
        return _make_fake(fake_size)
    if name == 'folder':
        from .image_folder import load_folder
        arrays, classes = load_folder(root, image_size, cache_dir, device_type, log)
        tensors = [torch.from_numpy(arrays[f'{split}_{kind}']) for split in ('train', 'test')
                   for kind in ('images', 'labels')]
        return ImageData(*tensors, len(classes), classes=tuple(classes))
    if os.path.exists(root) and not os.path.isdir(root):
        raise DatasetError(f'{root} is a file, not a folder of {name} files: give --data_dir the folder that holds '
                           f'them')
    if name in CIFAR_FILES:
        return _load_cifar(name, root, download)
    if name == 'fashionmnist':
        return _load_fashionmnist(root, download)
    raise DatasetError(f'unknown dataset {name!r}; choose one of: {", ".join(TRAINABLE_DATASETS)}')


# ----------------------------------------------------------------------------- protocol helpers


def split_train_validation(labels, seed=VALIDATION_SPLIT_SEED):
    """The paper's split of ``labels`` as torch index tensors: a stratified 10% of the training set, drawn with
    ``seed`` (the paper's 0 by default: the same split for every trial seed; train.py --split_seed draws another),
    in train_test_split's order, kept once drawn (split.draw_split)."""
    train_index, validation_index = draw_split(labels, seed)
    return torch.from_numpy(train_index), torch.from_numpy(validation_index)


def channel_mean_std(images):
    """Exact per-channel mean and (population) std of uint8 images, on the [0, 1] scale."""
    means, stds = [], []
    values = torch.arange(256, dtype=torch.float64) / 255
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).double()  # uint8 counted as it is: 6x faster than int64
        mean = (counts * values).sum() / counts.sum()
        means.append(mean.item())
        stds.append(((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt().item())
    return tuple(means), tuple(stds)


def draw_loader_seed():
    """The draw a torch DataLoader makes from torch's global generator each time it starts an epoch
    (its iterator's base seed, for worker processes); made here only to keep that stream as the
    original code's."""
    return torch.empty((), dtype=torch.int64).random_().item()


class ImageBatches:
    """A uint8 image set held on ``device``, served as float batches built by tensor ops.

    The pixels and the random draws are those of the original code's
    ``DataLoader(Subset(dataset, index), shuffle=True)`` with ``RandomHorizontalFlip``,
    ``ToTensor`` and (optionally) ``Normalize``: images become x / 255, then
    (x - mean) / std; an epoch's order is ``torch.randperm`` from a generator seeded
    by a draw from torch's global generator, and each image in that order is flipped
    when its ``torch.rand(1) < 0.5``. So a seed gives the original's batches, on every
    device (all draws are on the CPU).
    """

    def __init__(self, images, labels, device, mean=None, std=None):
        self.images = images.to(device)
        self.labels = labels.to(device)
        # The images, then the same images flipped, made for the first epoch: uint8 on a GPU, already
        # converted to float on the CPU (8 x the uint8 size: 340 MB for Fashion-MNIST, 1.1 GB for CIFAR-10).
        self._with_flipped = None
        shape = (1, -1, 1, 1)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(shape).to(device)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(shape).to(device)

    def __len__(self):
        return self.images.shape[0]

    def _to_float(self, images):
        images = images.div(255)  # ToTensor: float32(x) / 255, in one operation
        return images if self.mean is None else images.sub_(self.mean).div_(self.std)  # Normalize

    def shuffled(self, batch_size, start_batch=0, shard=None, min_batch=1):
        """One training epoch: the original's random order and flips, from torch's global generator.

        ``start_batch`` skips the first batches of the epoch (resuming mid-epoch, with the
        generator set back to the epoch's start): the order and flips are still drawn whole,
        so the generator ends in the same state. ``shard`` picks this process's part of
        each batch (data-parallel training); a last batch smaller than ``min_batch``
        images is left out. Yields (images, labels, size of the whole batch).
        """
        n = len(self)
        draw_loader_seed()
        sampler = torch.Generator().manual_seed(draw_loader_seed())  # RandomSampler's own seed
        order = torch.randperm(n, generator=sampler)
        flip = torch.rand(n) < 0.5  # one RandomHorizontalFlip draw per image, in the epoch's order
        if self._with_flipped is None:  # a batch is then one gather: no per-batch flip or select
            self._with_flipped = torch.cat([self.images, self.images.flip(3)])
            if self.images.device.type == 'cpu':  # RAM is plentiful and the CPU's conversion slow: convert once
                self._with_flipped = self._to_float(self._with_flipped)
        source = (order + n * flip).to(self.images.device)
        labels = self.labels.index_select(0, order.to(self.images.device))  # the epoch's labels, in order
        for start in range(start_batch * batch_size, n, batch_size):
            stop = min(start + batch_size, n)
            if stop - start < min_batch:
                break
            positions = slice(start, stop) if shard is None else shard(
                torch.arange(start, stop, device=self.images.device))
            images = self._with_flipped.index_select(0, source[positions])
            yield images if images.is_floating_point() else self._to_float(images), labels[positions], stop - start

    def in_order(self, batch_size, shard=None):
        """Evaluation: every image once (of this process's ``shard`` of the set), unflipped, in
        batches of ``batch_size`` as the original's evaluation DataLoader gives them."""
        draw_loader_seed()
        if shard is None:
            for start in range(0, len(self), batch_size):
                yield self._to_float(self.images[start:start + batch_size]), self.labels[start:start + batch_size]
            return
        index = shard(torch.arange(len(self), device=self.images.device))
        for start in range(0, len(index), batch_size):
            part = index[start:start + batch_size]
            yield self._to_float(self.images.index_select(0, part)), self.labels.index_select(0, part)

    def first(self, count=1):
        """The first ``count`` images as the network gets them (unflipped), drawing nothing at random."""
        return self._to_float(self.images[:count])

    def smallest_share(self, batch_size, processes=1):
        """The fewest images one of ``processes`` processes trains on in one step of an epoch: its part of a
        full batch, or of the last, smaller one (left out when it has fewer images than processes)."""
        rest = len(self) % batch_size
        shares = [batch_size // processes] + ([rest // processes] if rest >= processes else [])
        return min(shares)

    def num_batches(self, batch_size, min_batch=1):
        """Batches per epoch: the last, smaller one counts when it has at least ``min_batch`` images."""
        full, rest = divmod(len(self), batch_size)
        return full + (1 if rest >= min_batch and rest > 0 else 0)
