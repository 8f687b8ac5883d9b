"""norm_statistics.py: what is measured per layer, that measuring changes nothing, and how a run records it."""
import json

import pytest
import torch
import torch.nn as nn

import train
from revisiting_bn.batch_norm import MABN2d, ScaleBatchNorm2d
from conftest import FAST
from revisiting_bn.norm_statistics import THRESHOLD, NormStatistics, norm_layers


def test_statistics_of_a_known_layer():
    torch.manual_seed(0)
    bn = ScaleBatchNorm2d(3, bn_weight=0.5)
    bn.running_mean.copy_(torch.tensor([0.0, 1.0, -1.0]))
    bn.running_var.copy_(torch.tensor([1.0, 4.0, 0.25]))
    network = nn.Sequential(bn)
    images = torch.randn(8, 3, 4, 4) * 3
    stats = NormStatistics(network, images)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 0.7, 0.3]))
        bn.bias.copy_(torch.tensor([0.0, 0.1, -0.1]))
    measured = stats.measure()['0']
    x_hat = (images - bn.running_mean.view(1, 3, 1, 1)) / (bn.running_var.view(1, 3, 1, 1) + bn.eps).sqrt()
    output = bn.weight.view(1, 3, 1, 1) * x_hat + bn.bias.view(1, 3, 1, 1)
    assert measured['xhat_max_abs'] == pytest.approx(x_hat.abs().max().item(), rel=1e-6)
    assert measured['xhat_share_above'] == pytest.approx((x_hat.abs() > THRESHOLD).double().mean().item())
    assert measured['output_rms'] == pytest.approx(output.pow(2).mean().sqrt().item(), rel=1e-6)
    assert measured['gamma_mean'] == pytest.approx(0.5) and measured['gamma_min'] == pytest.approx(0.3)
    assert measured['gamma_distance'] == pytest.approx((0.0 + 0.2 + 0.2) / 3)
    assert measured['beta_max'] == pytest.approx(0.1) and measured['beta_distance'] == pytest.approx(0.2 / 3)
    assert network.training  # its mode is given back


def test_mabn_x_hat_is_its_own_normalisation():
    mabn = MABN2d(2, B=4, real_B=8, bn_weight=0.1)
    mabn.running_var.fill_(4.0)
    images = torch.randn(4, 2, 3, 3)
    measured = NormStatistics(nn.Sequential(mabn), images).measure()['0']
    assert measured['xhat_max_abs'] == pytest.approx((images / (4.0 + mabn.eps) ** 0.5).abs().max().item(), rel=1e-6)


def test_layers_in_network_order_with_the_input_bn():
    from revisiting_bn.networks import construct_network
    network = construct_network('resnet20', 10, 'fashionmnist', 0.1, 'bn')
    names = [name for name, _ in norm_layers(network)]
    assert names[:3] == ['input_bn', 'bn1', 'layer1.0.bn1'] and len(names) == 1 + 19


@pytest.mark.parametrize('network, size, channels', [('mlp', 28, 1), ('resnet20', 28, 1),
                                                     ('tv:mobilenet_v3_small', 32, 1), ('tv:mobilenet_v2', 32, 3)])
def test_a_layer_has_one_name_in_every_configuration(network, size, channels):
    """With and without the input BN (and the channel repeat of a torchvision network on grey images), each layer
    of the network keeps its name inside the network, so baseline and proposed line up layer by layer."""
    from revisiting_bn.data import DatasetInfo
    from revisiting_bn.networks import construct_network
    info = DatasetInfo(channels, size, 10)
    plain, with_input_bn = ([name for name, _ in norm_layers(construct_network(network, 10, info, 0.1, input_norm))]
                            for input_norm in ('dataset', 'bn'))
    assert with_input_bn == ['input_bn', *plain] and plain and not any(n.startswith(('0', '1.')) for n in plain)


def outcome(folder, name):
    record = json.loads((folder / 'fake' / 'results' / f'{name}.json').read_text())
    metrics = [{k: v for k, v in e.items() if k != 'epoch_time_s'} for e in record['epochs']]
    best = torch.load(folder / 'fake' / 'networks' / f'{name}-best.pt', weights_only=True)
    last = torch.load(folder / 'fake' / 'networks' / f'{name}-last.pt', weights_only=True)
    return record, metrics, best, last['network'], last['optimizer']['state']


@pytest.mark.parametrize('flags', [['--network', 'mlp'],
                                   ['--network', 'resnet20', '--norm', 'mabn', '--batch_size', '16',
                                    '--mabn_real_batch', '32', '--bn_weight', '1', '--c', '1', '--input_norm',
                                    'dataset']], ids=['bn', 'mabn'])
def test_measuring_changes_nothing(tmp_path, flags):
    runs = {}
    for name, switch in (('on', []), ('off', ['--no_norm_statistics'])):
        train.main(FAST + flags + ['--num_epochs', '2', '--path', str(tmp_path), '--name', name] + switch)
        runs[name] = outcome(tmp_path, name)
    on, off = runs['on'], runs['off']
    assert [e['epoch'] for e in on[0]['norm_statistics']['epochs']] == [0, 1, 2] and 'norm_statistics' not in off[0]
    assert on[1] == off[1]
    for a, b in ((on[2], off[2]), (on[3], off[3])):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical
    assert all(torch.equal(on[4][k]['momentum_buffer'], off[4][k]['momentum_buffer']) for k in on[4])


def test_a_resumed_run_continues_its_statistics(tmp_path):
    flags = FAST + ['--path', str(tmp_path), '--name', 'run']
    train.main(flags + ['--num_epochs', '1'])
    record = train.main(flags + ['--num_epochs', '3', '--resume', '--change_num_epochs'])
    stats = record['norm_statistics']
    assert [e['epoch'] for e in stats['epochs']] == [0, 1, 2, 3]
    assert stats['epochs'][0]['layers']['input_bn']['gamma_distance'] == 0  # at the start, gamma is its initial value
    assert stats['epochs'][3]['layers']['2']['gamma_distance'] > 0
    assert len(stats['gamma']['2']) == 64 and stats['threshold'] == THRESHOLD


def test_records_with_the_older_layer_names_line_up_with_newer_ones():
    """Records made before the names were stable ('0' for the input BN, '1.<name>' inside the network) are read under
    the stable names, so seeds of one configuration recorded by either version are drawn together."""
    from revisiting_bn.norm_figures import final_gammas, norm_runs, stable_names, xhat_by_layer
    layer = {'xhat_max_abs': 3.0, 'xhat_share_above': 0.01, 'output_rms': 0.5, 'gamma_distance': 0.1}
    old = {'threshold': 3.0, 'layers': ['0', '1.2', '1.5'], 'gamma': {'0': [0.05], '1.2': [0.1, 0.2]},
           'epochs': [{'epoch': e, 'layers': {n: layer for n in ('0', '1.2', '1.5')}} for e in (0, 1)]}
    new = stable_names(old)
    assert new['layers'] == ['input_bn', '2', '5'] and set(new['epochs'][1]['layers']) == {'input_bn', '2', '5'}
    assert stable_names(new) == new and [list(x) for x in final_gammas(old)] == [[0.05], [0.1, 0.2]]
    groups = {'proposed': {seed: {'record': {'status': 'finished', 'norm_statistics': stats}}
                           for seed, stats in ((1, old), (2, new))}}
    runs = norm_runs(groups)
    assert [s['layers'] for s in runs['proposed']] == [['input_bn', '2', '5']] * 2
    xhat_by_layer(runs)  # both seeds drawn layer by layer


def test_a_vanishing_signal_is_warned_about_and_kept_in_the_record(tmp_path, capsys):
    """torchvision's MobileNetV3-small, the smallest network whose signal vanishes at bn_weight 0.1 (its BN eps is
    1e-3): one epoch warns once, naming the layers, the figure and what to try; the JSON keeps the warning. At
    bn_weight 1, and for the paper's networks at 0.1, nothing is said."""
    flags = ['--dataset', 'fake', '--fake_size', '100', '--batch_size', '50', '--num_epochs', '1', '--device', 'cpu',
             '--path', str(tmp_path), '--network', 'tv:mobilenet_v3_small']
    record = train.main(flags + ['--name', 'small_gamma'])
    err = capsys.readouterr().err
    warning, = record['signal_warnings']
    assert warning['kind'] == 'vanishing' and warning['epoch'] == 0 and 'features.12.1' in warning['layers']
    assert len(warning['layers']) > len(record['norm_statistics']['layers']) / 2
    assert err.count('WARNING: the signal vanishes before training (epoch 0, batch statistics)') == 1
    assert 'xhat.png' in err and 'try a larger --bn_weight' in err
    first = record['norm_statistics']['epochs'][0]
    assert first['statistics'] == 'batch' and first['layers']['features.12.1']['xhat_rms'] < 0.5
    assert record['norm_statistics']['epochs'][1]['layers']['features.12.1']['batch_xhat_rms'] > 0
    record = train.main(flags + ['--name', 'unit_gamma', '--bn_weight', '1'])
    assert 'signal_warnings' not in record and 'WARNING' not in capsys.readouterr().err
    record = train.main(FAST + ['--path', str(tmp_path), '--num_epochs', '2'])
    assert 'signal_warnings' not in record and 'WARNING' not in capsys.readouterr().err


def test_the_flat_table_reads_with_pandas_and_the_docs_example_runs_on_it(tmp_path):
    """N.norm_statistics.csv: a row per epoch and layer with every statistic of the JSON, read by pandas as it is;
    the example of docs/norm-statistics.md draws its figure from it."""
    import re
    import subprocess
    import sys

    import pandas as pd
    from conftest import ROOT
    record = train.main(FAST + ['--path', str(tmp_path / 'training'), '--num_epochs', '2', '--name', 'proposed_seed1'])
    path = tmp_path / 'training' / 'fake' / 'results' / 'proposed_seed1.norm_statistics.csv'
    table = pd.read_csv(path, dtype={'layer': str})
    section = record['norm_statistics']
    assert len(table) == len(section['epochs']) * len(section['layers']) == 3 * 3
    assert list(table.layer[:3]) == ['input_bn', '2', '5'] and list(table.statistics[:3]) == ['batch'] * 3
    row, recorded = table[(table.epoch == 2) & (table.layer == '5')].iloc[0], section['epochs'][2]['layers']['5']
    # pandas before 2.0 parses floats to within a unit in the last place by default; the file is exact:
    assert row.xhat_max_abs == pytest.approx(recorded['xhat_max_abs'], rel=1e-15, abs=0)
    assert row.statistics == 'running' and row.batch_xhat_rms == pytest.approx(recorded['batch_xhat_rms'], rel=1e-15)
    import csv
    exact = [r for r in csv.DictReader(path.open()) if r['epoch'] == '2' and r['layer'] == '5'][0]
    assert float(exact['xhat_max_abs']) == recorded['xhat_max_abs']  # as Python printed it
    docs = open(f'{ROOT}/docs/norm-statistics.md').read()
    example = re.findall(r'```python\n(.*?)```', docs[docs.index('## Your own figure'):], flags=re.S)[0]
    example = example.replace('training/fashionmnist/results/proposed_seed1', str(path)[:-len('.norm_statistics.csv')])
    completed = subprocess.run([sys.executable, '-c', example], cwd=tmp_path, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (tmp_path / 'xhat_share.png').read_bytes()[:4] == b'\x89PNG'
