"""A run's life: where it stands (for train.py and the sweep alike), the one place that writes an epoch's outputs."""
import json
import os

import pytest
import torch

from revisiting_bn.cli import RunError, Stopped
from revisiting_bn.lifecycle import RunOutputs, standing, sweep_state
from revisiting_bn.runs import output_paths


def test_where_a_run_stands_is_read_from_its_files_once_for_train_and_sweep(tmp_path):
    """new (no files), unfinished (results, no checkpoint: it cannot be resumed, so a sweep trains it again from its
    start), resume (a checkpoint), finished (the record says so, checkpoint or not)."""
    paths = output_paths(str(tmp_path), 'fake', 'run')
    os.makedirs(paths['results'])
    os.makedirs(paths['networks'])
    assert standing(paths).kind == 'new' and sweep_state('run', {}, paths) == 'new'
    with open(paths['json'], 'w') as f:
        json.dump({'config': {}, 'status': 'running'}, f)
    assert standing(paths).kind == 'unfinished' and sweep_state('run', {}, paths) == 'restart'
    open(paths['checkpoint'], 'wb').close()
    assert standing(paths).kind == 'resume' and sweep_state('run', {}, paths) == 'resume'
    with open(paths['json'], 'w') as f:
        json.dump({'config': {'bn_weight': 0.1}, 'status': 'finished'}, f)
    now = standing(paths)
    assert (now.kind, now.has_checkpoint, now.record['status']) == ('finished', True, 'finished')
    assert sweep_state('run', {'bn_weight': 0.1}, paths) == 'finished'
    with pytest.raises(RunError, match=r'run already has finished results made with other settings \(bn_weight: 0.1 '
                                       r'-> 1.0\).*--sweep NAME'):
        sweep_state('run', {'bn_weight': 1.0}, paths)


class Model:
    """What RunOutputs snapshots: a network, its optimizer and schedule, the step and the epoch's position."""

    def __init__(self):
        from revisiting_bn.engine import Epoch, Step
        self.network = torch.nn.Linear(2, 2)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=0.1)
        self.scheduler = None
        self.step = Step(self.network, self.optimizer, torch.nn.CrossEntropyLoss())
        self.epoch = Epoch(1, 'cpu')


def record(status='running'):
    return {'config': {'name': 'run', 'dataset': 'fake', 'network': 'mlp', 'batch_size': 1, 'num_epochs': 1,
                       'learning_rate': 0.1, 'scheduler': 'cos', 'momentum': 0.9, 'weight_decay': 0.0,
                       'bn_weight': 0.1, 'c': 100, 'input_norm': 'bn'},
            'status': status, 'epochs': [{'epoch': 1, 'train_loss': 1.0, 'val_loss': 1.0, 'val_accuracy': 50.0,
                                          'test_accuracy': 50.0}]}


def test_an_epoch_writes_weights_checkpoint_results_then_tells_its_listeners_then_its_line(tmp_path, capsys):
    paths = output_paths(str(tmp_path), 'fake', 'run')
    os.makedirs(paths['results'])
    os.makedirs(paths['networks'])
    seen = []

    class Listener:  # a tracker: told of each new epoch once its files are written, closed with the run's end
        def epoch(self, written):
            seen.append((written['status'], sorted(os.listdir(paths['networks'])), os.path.exists(paths['txt'])))

        def close(self, written, status):
            seen.append(status)

        def ids(self):
            return {'tracker_id': 'abc'}

    with RunOutputs(paths, Model(), listeners=[Listener()]) as outputs:
        outputs.save(record('finished'), 1, best_weights=True, announce='epoch 1')
        outputs.save(record('interrupted'), 1)  # a stop's save repeats the last epoch: not told again
    assert seen == [('finished', ['run-best.pt', 'run-last.pt'], True), 'finished']
    assert torch.load(paths['checkpoint'], weights_only=True)['tracking'] == {'tracker_id': 'abc'}
    assert capsys.readouterr().out == 'epoch 1\n' and json.loads(open(paths['json']).read())['status'] == 'interrupted'


@pytest.mark.parametrize('error, status', [(ValueError('boom'), 'failed'), (Stopped(15), 'interrupted')])
def test_a_run_that_fails_or_is_stopped_at_once_says_so_in_its_record(tmp_path, error, status):
    paths = output_paths(str(tmp_path), 'fake', 'run')
    os.makedirs(paths['results'])
    os.makedirs(paths['networks'])
    with pytest.raises(type(error)):
        with RunOutputs(paths, Model()) as outputs:
            outputs.save(record(), 1)
            raise error
    written = json.loads(open(paths['json']).read())
    assert written['status'] == status and written['error'] == ('ValueError: boom (unexpected; '
                                                                'REVISITING_BN_TRACEBACK=1 shows the traceback)'
                                                                if status == 'failed' else 'interrupted')
