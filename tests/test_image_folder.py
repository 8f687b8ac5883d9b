"""image_folder.py and --dataset folder: ImageFolder's layout and order, exact pixels, resizing, the cache, and
training and evaluating through train.py on real Fashion-MNIST images written as PNG and JPEG files."""
import os

import numpy as np
import pytest
import torch

from revisiting_bn import image_folder
import train
from conftest import FASHION_MNIST_DIR, write_image_folder
from revisiting_bn.data import load_dataset

needs_fashionmnist = pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                                        reason="Debian's dataset-fashion-mnist package is not installed")


@pytest.fixture(scope='module')
def fashion():
    """The first 300 training and 60 test images of the real Fashion-MNIST."""
    data = load_dataset('fashionmnist', FASHION_MNIST_DIR, download=False)
    return (data.train_images[:300, 0].numpy(), data.train_labels[:300].numpy(),
            data.test_images[:60, 0].numpy(), data.test_labels[:60].numpy())


@pytest.fixture(scope='module')
def png_folder(fashion, tmp_path_factory):
    root = tmp_path_factory.mktemp('folder')
    write_image_folder(root, 'train', fashion[0], fashion[1])
    write_image_folder(root, 'test', fashion[2], fashion[3])
    return root


def imagefolder_order(root, split):
    """What torchvision's ImageFolder makes of the same folder: its classes, and each file's class index."""
    import torchvision
    folder = torchvision.datasets.ImageFolder(os.path.join(root, split))
    return folder.classes, folder.samples


@needs_fashionmnist
def test_png_folder_gives_the_exact_pixels_in_imagefolder_order(png_folder, fashion):
    arrays, classes = image_folder.load_folder(str(png_folder))
    for split, images, labels in (('train', *fashion[:2]), ('test', *fashion[2:])):
        order_classes, samples = imagefolder_order(png_folder, 'train' if split == 'train' else 'test')
        assert classes == order_classes or split == 'test'
        assert arrays[f'{split}_labels'].tolist() == [classes.index(order_classes[t]) for _, t in samples]
        index = [int(os.path.basename(path).split('.')[0]) for path, _ in samples]
        assert arrays[f'{split}_images'].shape == (len(images), 1, 28, 28)  # grey stays one channel, 28 the median
        assert np.array_equal(arrays[f'{split}_images'][:, 0], images[index])  # PNG is lossless: bit-exact


def test_colour_jpegs_are_resized_and_centre_cropped(tmp_path):
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (4, 40, 60, 3), dtype=np.uint8)  # height 40, width 60
    write_image_folder(tmp_path, 'train', wide, [0, 1, 0, 1], extension='jpg')
    write_image_folder(tmp_path, 'test', wide[:2], [0, 1], extension='jpg')
    arrays, classes = image_folder.load_folder(str(tmp_path), image_size=20)
    assert classes == ['c0', 'c1'] and arrays['train_images'].shape == (4, 3, 20, 20)
    from PIL import Image
    expected = Image.open(tmp_path / 'train' / 'c0' / '0.jpg').convert('RGB').resize((30, 20), Image.BILINEAR)
    expected = np.asarray(expected.crop((5, 0, 25, 20))).transpose(2, 0, 1)
    assert np.array_equal(arrays['train_images'][0], expected)


def test_one_colour_image_makes_the_whole_dataset_colour(tmp_path):
    write_image_folder(tmp_path, 'train', np.zeros((4, 8, 8), np.uint8), [0, 1, 0, 1])
    write_image_folder(tmp_path, 'test', np.full((1, 8, 8, 3), 200, np.uint8), [1])
    arrays, _ = image_folder.load_folder(str(tmp_path))
    assert arrays['train_images'].shape == (4, 3, 8, 8) and arrays['test_images'][0].min() == 200


def test_the_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    write_image_folder(tmp_path / 'data', 'train', np.zeros((6, 8, 8), np.uint8), [0, 1, 2] * 2)
    write_image_folder(tmp_path / 'data', 'test', np.zeros((3, 8, 8), np.uint8), [0, 1, 2])
    root, cache = str(tmp_path / 'data'), str(tmp_path / 'cache')
    decoded = []
    plain_decode = image_folder._decode
    monkeypatch.setattr(image_folder, '_decode', lambda *a: decoded.append(a[0]) or plain_decode(*a))
    first, _ = image_folder.load_folder(root, cache_dir=cache)
    assert len(decoded) == 9 and len(os.listdir(cache)) == 1
    again, _ = image_folder.load_folder(root, cache_dir=cache)
    assert len(decoded) == 9 and all(np.array_equal(first[k], again[k]) for k in first)  # from the cache
    write_image_folder(tmp_path / 'data', 'train', np.full((1, 8, 8), 7, np.uint8), [1])  # adds c1/0.png
    changed, _ = image_folder.load_folder(root, cache_dir=cache)
    assert len(decoded) == 19 and changed['train_images'].shape[0] == 7 and changed['train_images'][2].max() == 7
    write_image_folder(tmp_path / 'data', 'train', np.full((1, 8, 8), 9, np.uint8), [0])  # rewrites c0/0.png
    assert image_folder.load_folder(root, cache_dir=cache)[0]['train_images'][0].max() == 9 and len(decoded) == 29
    image_folder.load_folder(root, image_size=4, cache_dir=cache)
    assert len(decoded) == 39 and len(os.listdir(cache)) == 2  # another size: decoded again, cached beside
    image_folder.load_folder(root, cache_dir=cache)
    assert len(decoded) == 39  # the first size's cache still holds


def test_a_dataset_too_large_is_refused_before_decoding(tmp_path, monkeypatch):
    write_image_folder(tmp_path, 'train', np.zeros((4, 8, 8), np.uint8), [0, 1, 0, 1])
    write_image_folder(tmp_path, 'test', np.zeros((2, 8, 8), np.uint8), [0, 1])
    image_folder.load_folder(str(tmp_path), image_size=64, cache_dir=str(tmp_path / 'cache'))  # fits, and is cached
    monkeypatch.setattr(image_folder, '_available_memory', lambda: 1000)
    monkeypatch.setattr(image_folder, '_decode', lambda *a: pytest.fail('decoded'))
    message = r"6 images at 1x64x64 take 24.0 KiB as uint8, more than 80% of the 1000 bytes of memory .*about 8 would fit"
    with pytest.raises(image_folder.FolderError, match=message):
        image_folder.load_folder(str(tmp_path), image_size=64)
    with pytest.raises(image_folder.FolderError, match=message):  # from the cache too, before its images are read
        image_folder.load_folder(str(tmp_path), image_size=64, cache_dir=str(tmp_path / 'cache'))


@needs_fashionmnist
def test_train_and_evaluate_on_a_png_folder(png_folder, tmp_path, capsys):
    flags = ['--dataset', 'folder', '--data_dir', str(png_folder), '--network', 'mlp', '--device', 'cpu',
             '--batch_size', '32', '--path', str(tmp_path)]
    record = train.main(flags + ['--num_epochs', '2'])
    assert record['status'] == 'finished' and record['train_size'] == 270 and record['test_size'] == 60
    assert os.listdir(tmp_path / 'folder' / 'cache')  # under --path by default
    weights = record['weights_file']
    capsys.readouterr()
    result = train.main(flags + ['--evaluate', weights])
    assert result['val']['accuracy'] == record['best_val_accuracy']
    assert result['test']['accuracy'] == record['test_accuracy_at_best']
    assert f"test accuracy {record['test_accuracy_at_best']:.2f}%" in capsys.readouterr().out


@needs_fashionmnist
def test_a_torchvision_network_trains_on_a_jpeg_folder_at_a_small_size(fashion, tmp_path):
    write_image_folder(tmp_path / 'data', 'train', fashion[0][:200], fashion[1][:200], extension='jpg')
    write_image_folder(tmp_path / 'data', 'test', fashion[2][:20], fashion[3][:20], extension='jpg')
    record = train.main(['--dataset', 'folder', '--data_dir', str(tmp_path / 'data'), '--network', 'tv:mobilenet_v2',
                         '--image_size', '32', '--device', 'cpu', '--batch_size', '60', '--num_epochs', '1',
                         '--path', str(tmp_path)])
    assert record['status'] == 'finished' and np.isfinite(record['epochs'][0]['train_loss'])


def test_weights_that_do_not_fit_are_refused_naming_the_first_mismatch(tmp_path, capsys):
    flags = ['--dataset', 'fake', '--fake_size', '200', '--batch_size', '64', '--device', 'cpu', '--path',
             str(tmp_path)]
    record = train.main(flags + ['--network', 'mlp', '--num_epochs', '1'])
    copied = tmp_path / 'copied.pt'  # away from its results: evaluated with the flags as given
    copied.write_bytes(open(record['weights_file'], 'rb').read())
    with pytest.raises(SystemExit) as exit_info:
        train.run(flags + ['--network', 'resnet20', '--evaluate', str(copied)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert 'does not fit --network resnet20 on this data: it lacks 1.conv1.weight' in err[0]
    torch.save({'0.weight': torch.zeros(5)}, tmp_path / 'other.pt')
    with pytest.raises(SystemExit):
        train.run(flags + ['--network', 'mlp', '--evaluate', str(tmp_path / 'other.pt')])
    assert "0.weight has shape (5,), the network's (3,)" in capsys.readouterr().err


def test_evaluate_takes_the_runs_recorded_settings_and_refuses_a_contradicting_flag(tmp_path, capsys):
    """Weights of a folder run trained at --image_size 16, evaluated without that flag (nor --dataset, --data_dir,
    --network): the record's settings give the recorded accuracies, and say so; a flag that contradicts the record is
    refused, naming it. The record holds the resolved image size, the classes and the CPU's instruction set."""
    rng = np.random.default_rng(0)
    for split, n in (('train', 60), ('test', 20)):
        labels = np.arange(n) % 3
        images = (rng.integers(0, 60, (n, 40, 48, 3)) + 60 * labels[:, None, None, None]).astype(np.uint8)
        write_image_folder(tmp_path / 'data', split, images, labels)
    record = train.main(['--dataset', 'folder', '--data_dir', str(tmp_path / 'data'), '--image_size', '16',
                         '--network', 'mlp', '--num_epochs', '2', '--batch_size', '16', '--device', 'cpu', '--path',
                         str(tmp_path / 'out'), '--name', 'mine'])
    assert record['data'] == {'channels': 3, 'image_size': 16, 'num_classes': 3, 'classes': ['c0', 'c1', 'c2']}
    assert record['cpu_capability'] == torch.backends.cpu.get_cpu_capability() and record['cpu_threads'] >= 1
    capsys.readouterr()
    result = train.main(['--evaluate', record['weights_file'], '--device', 'cpu'])
    assert (result['val']['accuracy'], result['test']['accuracy']) == (record['best_val_accuracy'],
                                                                       record['test_accuracy_at_best'])
    assert f"--evaluate: with the settings recorded in {tmp_path / 'out' / 'folder' / 'results' / 'mine.json'}" in \
        capsys.readouterr().out
    for contradiction, named in ((['--image_size', '32'], "--image_size 32 (the run's: 16)"),
                                 (['--network', 'resnet20'], "--network 'resnet20' (the run's: 'mlp')")):
        with pytest.raises(SystemExit) as exit_info:
            train.run(['--evaluate', record['weights_file'], '--device', 'cpu', *contradiction])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and named in err and "contradicts the run's record" in err


def test_files_that_are_not_images_are_passed_over_as_imagefolder_does(tmp_path, capsys):
    """A README.txt and a .csv beside the images are passed over (one line says how many), as torchvision's
    ImageFolder passes them over; a damaged file with an image's ending is still refused."""
    write_image_folder(tmp_path / 'data', 'train', np.zeros((20, 8, 8), np.uint8), np.arange(20) % 2)
    write_image_folder(tmp_path / 'data', 'test', np.zeros((4, 8, 8), np.uint8), np.arange(4) % 2)
    (tmp_path / 'data' / 'train' / 'README.txt').write_text('where these images come from')
    (tmp_path / 'data' / 'train' / 'c1' / 'labels.csv').write_text('a,b')
    (tmp_path / 'data' / 'test' / 'c0' / 'Photo.JPG.txt').write_text('not an image')
    said = []
    arrays, classes = image_folder.load_folder(str(tmp_path / 'data'), log=said.append)
    assert classes == ['c0', 'c1'] and arrays['train_images'].shape[0] == 20 and arrays['test_images'].shape[0] == 4
    assert len(said) == 1 and 'passed over 2 files that are not an image by its ending' in said[0]
    record = train.main(['--dataset', 'folder', '--data_dir', str(tmp_path / 'data'), '--network', 'mlp',
                         '--num_epochs', '1', '--batch_size', '10', '--device', 'cpu', '--path', str(tmp_path / 'o')])
    assert record['status'] == 'finished' and 'passed over 2 files' in capsys.readouterr().out
    (tmp_path / 'data' / 'train' / 'c0' / 'broken.PNG').write_bytes(b'\x89PNG not really')
    with pytest.raises(image_folder.FolderError, match='broken.PNG is not an image Pillow can read'):
        image_folder.load_folder(str(tmp_path / 'data'))
