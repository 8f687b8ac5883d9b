"""Shared helpers: the repository root on sys.path, small runs' flags, writers for the real on-disk dataset formats,
step-by-step comparison of optimizer updates, and the original code's arithmetic as oracles."""
import os

# One thread per test process, and for every train.py it starts: the suite must not oversubscribe a shared machine
# (docs/threads.md), and thread counts then never differ between a run and its resumption.
os.environ['OMP_NUM_THREADS'] = '1'

import gzip  # noqa: E402
import pickle
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
# A small train.py run: the MLP on random CIFAR-shaped data, 180 training images in batches of 64, on the CPU.
FAST = ['--dataset', 'fake', '--fake_size', '200', '--batch_size', '64', '--device', 'cpu', '--network', 'mlp']
# The t-test example of the original README: p = 0.0574, not significant.
README_PROPOSED = [91.7, 93.4, 92.2, 90.0, 91.9]
README_BASELINE = [91.0, 92.7, 92.2, 90.1, 91.5]


def parse_args(flags):
    """train.py's flags as train.py validates them."""
    from revisiting_bn.flags import parse_args as parse
    return parse(flags)


def batch_norms(model):
    import torch.nn as nn
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def write_cifar(root, name='cifar10', per_batch=40, test_size=50, seed=0, classes=None):
    """Write a small CIFAR-10/100 in torchvision's extracted on-disk format (pickled batches); labels cycle
    through the first ``classes`` classes (all by default)."""
    rng = np.random.default_rng(seed)
    folder, files, label_key, all_classes = {
        'cifar10': ('cifar-10-batches-py', [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch'], 'labels', 10),
        'cifar100': ('cifar-100-python', ['train', 'test'], 'fine_labels', 100),
    }[name]
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    written = {}
    for file in files:
        n = test_size if 'test' in file else per_batch * (5 if name == 'cifar100' else 1)
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = (np.arange(n) % (classes or all_classes)).tolist()
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


def write_image_folder(root, split, images, labels, extension='png'):
    """Write uint8 images (N, H, W) or (N, H, W, 3) as image files in torchvision's ImageFolder layout:
    root/split/c{label}/{i}.{extension}. Returns the paths in the order written."""
    from PIL import Image
    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(root, split, f'c{int(label)}')
        os.makedirs(folder, exist_ok=True)
        paths.append(os.path.join(folder, f'{i}.{extension}'))
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(paths[-1])
    return paths


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


# ----------------------------------------------------------------------------- the original code, as oracles
# What the paper's code does, written out plainly so tests can compare our optimised code with it bit for bit.

def original_network(network_name, num_classes, bn_weight, input_norm, in_channels=3, cifar_stem=True):
    """The original construct_network's arithmetic: torchvision's ResNet with every BN scale at bn_weight
    (<= 0 meaning 1), the 3x3 stem, then every conv Kaiming-normal and every linear weight
    kaiming_uniform_(fan_in, relu, a=sqrt(5)) (the ReLU gain: a is ignored), biases 0, and an input BN whose
    scale is bn_weight * 0.58 mapped to 1.0 when <= 0."""
    import math
    from functools import partial

    import torch.nn as nn
    import torchvision
    from torch.nn.modules.batchnorm import _BatchNorm

    class BN(_BatchNorm):
        def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, bn_weight=1.0):
            super().__init__(num_features, eps, momentum, affine)
            nn.init.constant_(self.weight, 1.0 if bn_weight <= 0 else bn_weight)
            nn.init.constant_(self.bias, 0)

        def _check_input_dim(self, x):
            pass

    network = getattr(torchvision.models, network_name)(
        num_classes=num_classes, norm_layer=partial(BN, eps=1e-5, momentum=0.1, bn_weight=bn_weight))
    if cifar_stem:
        network.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        network.maxpool = nn.Identity()
    for m in network.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu', a=0)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, mode='fan_in', nonlinearity='relu', a=math.sqrt(5))
    for m in network.modules():
        if getattr(m, 'bias', None) is not None:
            nn.init.constant_(m.bias, 0)
    if input_norm == 'bn':
        input_bn = BN(in_channels, eps=1e-5, momentum=0.1, bn_weight=bn_weight * 0.58, affine=True)
        input_bn.bias.requires_grad = False
        network = nn.Sequential(input_bn, network)
    return network


def original_parameter_groups(network, weight_decay, learning_rate, c, skip_list=()):
    """The original adjust_weight_decay_and_learning_rate: by shape and name. A trainable parameter that is 1-D
    once squeezed (or named in skip_list) gets no weight decay, and lr / c too when 'weight' is in its name;
    everything else gets weight decay. Only the lr / c group names an lr, and only when c > 1."""
    decay, no_decay, scales = [], [], []
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        if len(param.squeeze().shape) == 1 or name in skip_list:
            (scales if 'weight' in name else no_decay).append(param)
        else:
            decay.append(param)
    scale_group = {'params': scales, 'weight_decay': 0.0}
    if c > 1:
        scale_group['lr'] = learning_rate / c
    return [{'params': no_decay, 'weight_decay': 0.0}, scale_group, {'params': decay, 'weight_decay': weight_decay}]


def original_loader(hwc, labels, batch_size, index=None, train=False, mean=None, std=None):
    """The original's DataLoader: over a Subset in the split's order (index), per-image PIL images; for training
    shuffled, with RandomHorizontalFlip; then ToTensor (and Normalize with mean/std)."""
    import torch
    from PIL import Image
    from torchvision import transforms

    steps = ([transforms.RandomHorizontalFlip(p=0.5)] if train else []) + [transforms.ToTensor()]
    transform = transforms.Compose(steps + ([transforms.Normalize(mean, std)] if mean else []))

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(hwc)

        def __getitem__(self, i):
            return transform(Image.fromarray(hwc[i])), int(labels[i])

    dataset = Images() if index is None else torch.utils.data.Subset(Images(), index)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train)


# ----------------------------------------------------------------------------- one optimizer step against another

def small_network(seed=0):
    import torch
    import torch.nn as nn
    torch.manual_seed(seed)
    return nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 4))


def optimizer_for(network, momentum=0.9):
    import torch
    from revisiting_bn.weight_decay_and_learning_rate import adjust_weight_decay_and_learning_rate
    groups = adjust_weight_decay_and_learning_rate(network, weight_decay=1e-2, learning_rate=0.1, c=100)
    return torch.optim.SGD(groups, lr=0.1, momentum=momentum)


def sync(source, target, opt_source, opt_target):
    """Give ``target`` the weights, BN statistics and momentum buffers of ``source`` (in place, so a captured
    graph sees them too): the next step of each then starts from the same state, and any difference comes from
    that one step, not from rounding accumulated over earlier ones."""
    target.load_state_dict(source.state_dict())
    for p_source, p_target in zip(source.parameters(), target.parameters()):
        buffer = opt_source.state[p_source].get('momentum_buffer')
        if buffer is not None and 'momentum_buffer' in opt_target.state[p_target]:
            opt_target.state[p_target]['momentum_buffer'].copy_(buffer)


def assert_one_update_apart(reference, ours, opt_ref, opt_ours, before):
    """After one step of each from the same state (``before``) and batch: identical gradients, so identical
    momentum buffers (the same two roundings: buffer x momentum, + gradient + wd x weight) and BN statistics. The
    weights differ only in how the update is added: torch.optim.SGD adds -lr x buffer in one fused operation,
    sgd_step rounds the product first. That is at most one rounding of the update and one of the sum, each
    <= 2^-24 relative, so |ours - reference| <= 2 x 2^-23 x (|w| + |update|), with a factor 2 to spare. A real
    bug (a wrong lr or group, a missing weight decay or momentum term) is off by >= 1e-3 x |update|."""
    import torch
    eps = torch.finfo(torch.float32).eps
    parameters = {name for name, _ in reference.named_parameters()}
    for (name, new), mine in zip(reference.state_dict().items(), ours.state_dict().values()):
        if name in parameters:
            bound = 2 * eps * (new.abs() + (new - before[name]).abs())
            assert ((mine - new).abs() <= bound).all(), (name, (mine - new).abs().max().item())
        else:
            assert torch.equal(mine, new), name
    for p_ref, p_ours in zip(reference.parameters(), ours.parameters()):
        buffer = opt_ref.state[p_ref].get('momentum_buffer')
        assert buffer is None or torch.equal(buffer, opt_ours.state[p_ours]['momentum_buffer'])
