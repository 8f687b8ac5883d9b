"""RNG states through weights-only checkpoints, refused checkpoints, snapshots."""
import random

import numpy as np
import pytest
import torch

from revisiting_bn.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, cpu_copy,
                                      load_checkpoint, restore_rng_states, rng_states, save_torch)


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_torch({'rng': rng_states()}, str(tmp_path / 'c.pt'))
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    states = torch.load(tmp_path / 'c.pt', weights_only=True)['rng']
    restore_rng_states(states)
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def test_corrupt_foreign_and_incomplete_checkpoints(tmp_path):
    path = tmp_path / 'x-last.pt'
    path.write_bytes(b'\x80\x02garbage')
    with pytest.raises(CheckpointError, match='corrupt or unreadable'):
        load_checkpoint(str(path))
    save_torch({'weight': torch.ones(2)}, str(path))  # a plain state_dict, not a train.py checkpoint
    with pytest.raises(CheckpointError, match='not a train.py checkpoint'):
        load_checkpoint(str(path))
    save_torch({'format': CHECKPOINT_FORMAT, 'config': {}}, str(path))
    with pytest.raises(CheckpointError, match='incomplete: it lacks network'):
        load_checkpoint(str(path))
    save_torch({'format': 'revisiting-bn-checkpoint-v1', 'config': {}}, str(path))
    with pytest.raises(CheckpointError, match='older train.py whose data order differs'):
        load_checkpoint(str(path))


def test_cpu_copy_is_a_snapshot_that_later_training_cannot_change():
    network = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    network(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    live = {'network': network.state_dict(), 'optimizer': optimizer.state_dict(), 'epochs': [{'epoch': 1}]}
    snapshot = cpu_copy(live)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    optimizer.step()  # in-place updates of weights and momentum buffers
    live['epochs'].append({'epoch': 2})
    assert not torch.equal(before['weight'], network.weight.detach())
    for key, value in before.items():
        assert torch.equal(snapshot['network'][key], value)
    assert not torch.equal(snapshot['optimizer']['state'][0]['momentum_buffer'],
                           optimizer.state[network.weight]['momentum_buffer'])
    assert snapshot['epochs'] == [{'epoch': 1}] and type(snapshot['network']) is type(live['network'])
