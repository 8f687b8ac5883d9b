"""Your own images as a dataset: an ImageFolder tree, decoded once, resized, and cached as uint8 arrays.

    ROOT/train/<class>/<any path>/<image>      ROOT/test/<class>/...

as torchvision's ImageFolder reads it: classes are the folder names, sorted; every file below a
class folder (hidden files excepted) must be an image Pillow reads, in colour or grey (the data
is grey only if every image is). Each image is resized so that its shorter side is the image
size (bilinear, antialiased: Pillow's resize) and centre-cropped to a square, as torchvision's
evaluation transform does, which keeps the aspect ratio and the centre of the image; an image
already of that square size is kept exactly. The default size is the median shorter side of the
training images, so most images are only cropped, never blown up.

Decoding thousands of files takes a while, so the result is cached (one .npz file per folder and
size, in the cache folder) and reused until a file below ROOT or the image size changes.
"""
import hashlib
import io
import os
import sys
from dataclasses import dataclass

import numpy as np

from .cli import RunError, plural
from .runs import atomic_write

__all__ = ['FolderError', 'Scan', 'scan', 'load_folder', 'memory_problem']

CACHE_FORMAT = 'revisiting-bn-image-folder-v2'  # v2: the images' (channels, size) stored apart
GREY_MODES = {'1', 'L', 'LA', 'I', 'I;16', 'F'}


class FolderError(RunError):
    """An image folder is missing, laid out wrongly, or holds a file that is not a readable image."""


@dataclass
class Scan:
    """The files of both splits (sorted as ImageFolder sorts them) with their labels, and the classes."""
    classes: list
    files: dict   # split -> [path]
    labels: dict  # split -> [class index]
    skipped: list = None  # files that are not images by their ending, passed over as ImageFolder does

    def fingerprint(self, image_size):
        """Changes when any file is added, removed, renamed or rewritten, or the image size changes."""
        digest = hashlib.sha256(f'{CACHE_FORMAT} {image_size} {self.classes}'.encode())
        for split in ('train', 'test'):
            for path in self.files[split]:
                status = os.stat(path)
                digest.update(f'{split} {path} {status.st_size} {status.st_mtime_ns}\n'.encode())
        return digest.hexdigest()


# torchvision's ImageFolder takes files with these endings (in any case) and passes over every other file.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def _class_files(folder, skipped):
    """Every non-hidden image file below ``folder``, in ImageFolder's order; the other files go to ``skipped``."""
    found = []
    for here, subfolders, names in sorted(os.walk(folder, followlinks=True)):
        subfolders[:] = [s for s in subfolders if not s.startswith('.')]
        for name in sorted(names):
            if not name.startswith('.'):
                (found if name.lower().endswith(IMAGE_EXTENSIONS) else skipped).append(os.path.join(here, name))
    return found


def scan(root):
    """The folder's layout, checked: both splits, no empty class, no test class the training set lacks."""
    for split in ('train', 'test'):
        if not os.path.isdir(os.path.join(root, split)):
            raise FolderError(f'{root}: no {split}/ folder; --dataset folder expects {root}/train/<class>/... and '
                              f'{root}/test/<class>/... (torchvision ImageFolder layout)')
    classes = {split: sorted(e.name for e in os.scandir(os.path.join(root, split))
                             if e.is_dir() and not e.name.startswith('.')) for split in ('train', 'test')}
    if len(classes['train']) < 2:
        raise FolderError(f'{root}/train holds {plural(len(classes["train"]), "class folder")}; a classifier needs 2 '
                          f'or more')
    extra = [name for name in classes['test'] if name not in classes['train']]
    if extra:
        raise FolderError(f'{root}/test has class {extra[0]!r} that {root}/train lacks; the test classes must be '
                          f'training classes')
    index = {name: i for i, name in enumerate(classes['train'])}
    files, labels, skipped = {}, {}, []
    for split in ('train', 'test'):
        files[split], labels[split] = [], []
        for name in classes[split]:
            found = _class_files(os.path.join(root, split, name), skipped)
            if not found:
                raise FolderError(f'{root}/{split}/{name} has no image ({", ".join(IMAGE_EXTENSIONS)}): remove it or '
                                  f'add its images')
            files[split] += found
            labels[split] += [index[name]] * len(found)
    return Scan(classes['train'], files, labels, skipped)


def _open(path):
    from PIL import Image, UnidentifiedImageError
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise FolderError(f'{path} is not an image Pillow can read; remove it from the folder') from None
    except OSError as error:
        raise FolderError(f'cannot read {path}: {error.strerror or error}') from None


def _headers(paths):
    """(shorter side of each image, whether every image is grey), from the files' headers alone."""
    sides, grey = [], True
    for path in paths:
        with _open(path) as image:
            sides.append(min(image.size))
            grey = grey and image.mode in GREY_MODES
    return sides, grey


def _decode(path, size, mode):
    """One image as uint8 (size, size) or (size, size, 3): shorter side resized to ``size``, centre crop."""
    from PIL import Image
    try:
        with _open(path) as image:
            image = image.convert(mode)
            width, height = image.size
            if (width, height) != (size, size):
                scale = size / min(width, height)
                width, height = max(size, round(width * scale)), max(size, round(height * scale))
                image = image.resize((width, height), Image.BILINEAR)
                left, top = (width - size) // 2, (height - size) // 2
                image = image.crop((left, top, left + size, top + size))
            return np.asarray(image, dtype=np.uint8)
    except FolderError:
        raise
    except Exception as error:  # a truncated or damaged file fails here, when its pixels are read
        raise FolderError(f'{path} is a damaged image ({type(error).__name__}: {error}); replace or remove it') \
            from None


def _available_memory():
    """Bytes of memory available to new allocations (Linux), or None."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _size(count):
    for unit, scale in (('GiB', 2 ** 30), ('MiB', 2 ** 20), ('KiB', 2 ** 10)):
        if count >= scale:
            return f'{count / scale:.1f} {unit}'
    return f'{count} bytes'


def memory_problem(count, channels, size, device_type='cpu'):
    """Why ``count`` uint8 images of channels x size x size do not fit in memory (and on a CUDA device), or None."""
    import torch
    needed = count * channels * size * size
    places = [('memory', _available_memory())]
    if device_type == 'cuda' and torch.cuda.is_available():
        places.append(('GPU memory', torch.cuda.mem_get_info()[0]))
    for place, free in places:
        if free is not None and needed > 0.8 * free:
            smaller = max(8, int(size * (0.4 * free / needed) ** 0.5))
            return (f'the folder\'s {count:,} images at {channels}x{size}x{size} take {_size(needed)} as uint8, more '
                    f'than 80% of the {_size(free)} of {place} available: use a smaller --image_size (about {smaller} '
                    f'would fit) or fewer images')
    return None


def _cache_path(cache_dir, root, image_size):
    key = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f'folder-{key}-{image_size or "auto"}.npz')


def _read_cache(path, fingerprint, count, device_type):
    """The cached arrays if the cache matches ``fingerprint``, else None; refused, before the images are read, if
    its ``count`` images would not fit (memory_problem)."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache['fingerprint']) != fingerprint:
                return None
            problem = memory_problem(count, *(int(v) for v in cache['shape']), device_type)
            if problem:
                raise FolderError(problem)
            return {key: cache[key] for key in cache.files if key.endswith(('_images', '_labels'))}
    except (OSError, ValueError, KeyError):
        return None


def _decode_all(found, image_size, device_type):
    from tqdm import tqdm
    sides, grey = _headers(found.files['train'] + found.files['test'])
    size = image_size or int(np.median(sides[:len(found.files['train'])]))
    channels, mode = (1, 'L') if grey else (3, 'RGB')
    problem = memory_problem(len(sides), channels, size, device_type)
    if problem:
        raise FolderError(problem)
    arrays = {}
    with tqdm(total=len(sides), desc=f'decoding images to {size}x{size} (once; then cached)', unit='image',
              leave=False, disable=not sys.stderr.isatty()) as progress:
        for split in ('train', 'test'):
            images = np.empty((len(found.files[split]), channels, size, size), dtype=np.uint8)
            for i, path in enumerate(found.files[split]):
                pixels = _decode(path, size, mode)
                images[i] = pixels[None] if grey else pixels.transpose(2, 0, 1)
                progress.update()
            arrays[f'{split}_images'] = images
            arrays[f'{split}_labels'] = np.asarray(found.labels[split], dtype=np.int64)
    return arrays


def load_folder(root, image_size=None, cache_dir=None, device_type='cpu', log=None):
    """The folder's train and test images as uint8 (N, C, S, S) arrays with int64 labels, and its classes:
    from the cache when it matches the files, decoded (and cached, when ``cache_dir`` is given) otherwise.
    Files that are not images by their ending are passed over, and ``log`` (when given) says how many in one
    line; a file with an image's ending that is damaged is refused. Refuses, before decoding, a dataset that would
    not fit in memory (or, for CUDA, in GPU memory)."""
    if not os.path.isdir(root):
        raise FolderError(f'--data_dir {root} is not a folder; --dataset folder expects {root}/train/<class>/... and '
                          f'{root}/test/<class>/...')
    found = scan(root)
    if found.skipped and log is not None:
        log(f'{root}: passed over {plural(len(found.skipped), "file")} that {"is" if len(found.skipped) == 1 else "are"}'
            f' not an image by its ending, as torchvision\'s ImageFolder does (e.g. {found.skipped[0]})')
    fingerprint = found.fingerprint(image_size)
    path = cache_dir and _cache_path(cache_dir, root, image_size)
    count = len(found.files['train']) + len(found.files['test'])
    arrays = _read_cache(path, fingerprint, count, device_type) if path and os.path.exists(path) else None
    if arrays is not None:
        return arrays, found.classes
    arrays = _decode_all(found, image_size, device_type)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        buffer = io.BytesIO()
        shape = np.array(arrays['train_images'].shape[1:3])  # (channels, size)
        np.savez(buffer, fingerprint=np.array(fingerprint), shape=shape, **arrays)
        atomic_write(path, lambda f: f.write(buffer.getbuffer()))
    return arrays, found.classes
