"""train.py's command line: the original's defaults, a role for every flag, and one definition of the settings
that make an experiment, which resume, sweep and report all follow."""
import json
import os

import pytest
import torch

import sweep
import train
import train_args
from conftest import parse_args
from results import ResultsError, group_runs, load_runs
from train_args import CONTROL, EXPERIMENT, PLACE, differing_settings, experiment_settings, setting_differences


def test_defaults_match_the_original_readme():
    args = parse_args([])
    assert (args.dataset, args.network, args.batch_size, args.num_epochs, args.learning_rate, args.scheduler,
            args.momentum, args.weight_decay, args.bn_weight, args.c, args.input_norm, args.seed) == (
        'cifar10', 'resnet18', 128, 180, 0.1, 'cos', 0.9, 1e-4, 0.1, 100, 'bn', '1')
    assert args.name == 'cifar10_train_weight0.1_c100' and args.path == os.path.join('.', 'training', '')
    assert parse_args(['--bn_weight', '1', '--c', '1']).name == 'cifar10_train_weight1.0_c1.0'  # as the original
    assert args.device == ('cuda' if torch.cuda.is_available() else 'cpu')


def test_every_flag_declares_its_role():
    actions = [a for a in train_args.build_parser()._actions if a.dest != 'help']
    assert all(getattr(a, 'role', None) in (EXPERIMENT, PLACE, CONTROL) for a in actions)
    assert experiment_settings() == ('dataset', 'network', 'batch_size', 'num_epochs', 'learning_rate', 'scheduler',
                                     'momentum', 'weight_decay', 'bn_weight', 'c', 'input_norm', 'norm',
                                     'mabn_real_batch', 'train_only_bn', 'bn_affine', 'bn_running_stats', 'seed',
                                     'image_size', 'fake_size', 'precision', 'channels_last', 'sync_bn')
    config = train_args.run_config(parse_args(['--resume']))
    assert 'resume' not in config and 'overwrite' not in config and 'cuda_graph' not in config  # train.py decides it


def test_setting_differences_name_each_setting():
    saved = {'bn_weight': 0.1, 'c': 100, 'seed': '1', 'path': 'a', 'device': 'cpu'}
    current = {'bn_weight': 1.0, 'c': 100.0, 'seed': '2', 'path': 'b', 'device': 'cuda'}
    assert setting_differences(saved, current) == ["bn_weight: 0.1 -> 1.0", "seed: '1' -> '2'"]  # c 100 == 100.0
    assert setting_differences(saved, current, ignore=('seed',)) == ["bn_weight: 0.1 -> 1.0"]  # path is no setting
    assert differing_settings([saved, current, {**current, 'bn_weight': 0.5}], ignore=('seed',)) == {
        'bn_weight': [0.1, 1.0, 0.5]}


TINY = ['--dataset', 'fake', '--fake_size', '100', '--batch_size', '100', '--num_epochs', '1', '--network', 'mlp',
        '--bn_weight', '0.1', '--c', '100', '--input_norm', 'bn']  # the flags of sweep.py's 'proposed', one step


def test_a_new_experiment_flag_is_noticed_by_resume_sweep_and_report(tmp_path, monkeypatch, capsys):
    """Declaring a flag an experiment setting is all it takes: a resume, a sweep and a report then refuse to
    mix runs that differ in it, naming it."""
    plain_parser = train_args.build_parser

    def with_knob(**kwargs):
        parser = plain_parser(**kwargs)
        parser.add_argument('--knob', type=int, default=0).role = EXPERIMENT
        return parser

    monkeypatch.setattr(train_args, 'build_parser', with_knob)
    assert experiment_settings()[-1] == 'knob'
    path = str(tmp_path) + '/'
    own = ['--path', path, '--name', 'proposed_seed1', '--seed', '1', '--device', 'cpu']
    first = train.main(TINY + own)
    assert first['config']['knob'] == 0 and first['status'] == 'finished'

    with pytest.raises(SystemExit) as exit_info:  # 1. train.py --resume
        train.run(TINY + own + ['--resume', '--knob', '1'])
    assert exit_info.value.code == 2 and 'knob: 0 -> 1' in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:  # 2. the sweep's skip decision
        sweep.main(['--dry_run', '--configs', 'proposed', '--seeds', '1', '--gpus', '0', '--path', path, '--',
                    *TINY, '--knob', '1'])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and 'proposed_seed1 already has finished results' in err and 'knob: 0 -> 1' in err

    results = tmp_path / 'fake' / 'results'  # 3. the report's grouping: seed 2 of the same label, with knob 1
    other = {**first, 'config': {**first['config'], 'name': 'proposed_seed2', 'seed': '2', 'knob': 1}}
    (results / 'proposed_seed2.json').write_text(json.dumps(other))
    with pytest.raises(ResultsError, match=r'runs named proposed differ in knob \(0.0, 1.0\)'):
        group_runs(load_runs([str(results)]))


def test_a_cuda_index_past_the_last_device_is_refused_with_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    with pytest.raises(ValueError, match=r'^--device cuda:1: only 1 CUDA device present$'):
        train_args.resolve_device('cuda:1')
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    with pytest.raises(ValueError, match=r'^--device cuda:2: only 2 CUDA devices present$'):
        train_args.resolve_device('cuda:2')


def test_validate_args_only_checks_and_complete_args_derives_on_a_copy(capsys):
    """validate_args neither changes nor prints (sweep.py and bench.py call it too); what follows from the flags
    (canonical seed, default name and path, torch's device name) comes from complete_args, on a copy."""
    args = train_args.build_parser().parse_args(['--seed', '00', '--device', 'cpu', '--dataset', 'fashionmnist'])
    before = dict(vars(args))
    train_args.validate_args(args)
    assert vars(args) == before and capsys.readouterr() == ('', '')
    completed = train_args.complete_args(args)
    assert (completed.seed, completed.name, completed.path) == ('0', 'fashionmnist_train_weight0.1_c100',
                                                                os.path.join('.', 'training', ''))
    assert vars(args) == before
    bad = train_args.build_parser().parse_args(['--batch_size', '0', '--device', 'cpu', '--resume', '--overwrite'])
    with pytest.raises(train_args.UsageError, match=r'--batch_size must be >= 1, got 0; .*contradict') as error:
        train_args.validate_args(bad)
    assert error.value.status == 2
    with pytest.raises(train_args.UsageError, match='fp16 needs a CUDA device'):
        train_args.validate_args(train_args.build_parser().parse_args(['--device', 'cpu', '--precision', 'fp16']))
