"""Where a training run's files go, what they hold, and reading them back.

With --path P, --dataset D and --name N:
  P/D/networks/N-best.pt   state_dict of the best-validation epoch
  P/D/networks/N-last.pt   checkpoint to resume from (see checkpoint.py)
  P/D/results/N.txt        the original code's results file: 'Setting: value,,,, ' lines, then a CSV table
  P/D/results/N.json       configuration, every epoch's metrics, best epoch, versions, status
"""
import json
import os
import platform

import torch

__all__ = ['RESULT_COLUMNS', 'TEXT_SETTINGS', 'output_paths', 'check_writable', 'results_text', 'new_record',
           'read_record', 'is_finished']

RESULT_COLUMNS = ('epoch', 'train_loss', 'val_loss', 'val_accuracy', 'test_accuracy')


def output_paths(path, dataset, name, data_dir=None):
    root = os.path.join(path, dataset)
    return {
        'images': data_dir or os.path.join(root, 'images'),
        'networks': os.path.join(root, 'networks'),
        'results': os.path.join(root, 'results'),
        'weights': os.path.join(root, 'networks', f'{name}-best.pt'),
        'checkpoint': os.path.join(root, 'networks', f'{name}-last.pt'),
        'txt': os.path.join(root, 'results', f'{name}.txt'),
        'json': os.path.join(root, 'results', f'{name}.json'),
    }


def check_writable(folder):
    """A one-line reason why ``folder`` could not be created or written, or None. Creates nothing."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f'cannot create {folder}: {existing} is a file, not a folder'
    if not os.access(existing, os.W_OK | os.X_OK):
        return f'cannot write to {folder}: {existing} is not writable'
    return None


# The original code's results file: these settings, in this order and spelling, then the table.
TEXT_SETTINGS = (('Name', 'name'), ('Dataset', 'dataset'), ('Network', 'network'), ('Batch Size', 'batch_size'),
                 ('Num Epochs', 'num_epochs'), ('Learning Rate', 'learning_rate'), ('LR Scheduler', 'scheduler'),
                 ('Momentum', 'momentum'), ('Weight Decay', 'weight_decay'), ('BN Intial Scale', 'bn_weight'),
                 ('LR Reduction Value', 'c'), ('Input Normalization Method', 'input_norm'))


def results_text(config, epochs):
    """The original code's results file, byte for byte: 'Setting: value,,,, ' lines, then a CSV table
    with 0-based epochs and every value as Python prints it (the JSON holds everything else)."""
    lines = [f'{label}: {config[key]},,,, ' for label, key in TEXT_SETTINGS]
    lines.append(','.join(RESULT_COLUMNS) + ' ')
    lines += [f"{row['epoch'] - 1},{row['train_loss']},{row['val_loss']},{row['val_accuracy']},"
              f"{row['test_accuracy']} " for row in epochs]
    return '\n'.join(lines) + '\n'


def new_record(config, device, weights_file, **facts):
    """The JSON results of a run that has not finished an epoch yet."""
    import torchvision
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'
    return {'config': config, 'status': 'running', **facts, 'epochs': [], 'best_epoch': None,
            'best_val_accuracy': None, 'test_accuracy_at_best': None, 'final_test_accuracy': None,
            'wall_time_s': 0.0, 'weights_file': weights_file, 'device': str(device), 'device_name': name,
            'torch_version': str(torch.__version__), 'torchvision_version': str(torchvision.__version__),
            'python_version': platform.python_version()}


def read_record(path):
    """The JSON results at ``path``, or None if there are none or they cannot be read."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_finished(record):
    return bool(record) and record.get('status') == 'finished'
