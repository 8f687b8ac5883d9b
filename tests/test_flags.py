"""train.py's flags: the original's defaults, a role for every flag from the one table of roles, and the checks."""
import json
import os

import pytest
import torch

import sweep
import train
from conftest import parse_args
from revisiting_bn import flags
from revisiting_bn.cli import UsageError
from revisiting_bn.experiment import EXPERIMENT, ROLES, experiment_settings, run_config
from revisiting_bn.protocol import DEFAULTS
from revisiting_bn.results import ResultsError, group_runs, load_runs


def test_defaults_match_the_original_readme():
    args = parse_args([])
    assert (args.dataset, args.network, args.batch_size, args.num_epochs, args.learning_rate, args.scheduler,
            args.momentum, args.weight_decay, args.bn_weight, args.c, args.input_norm, args.seed) == (
        'cifar10', 'resnet18', 128, 180, 0.1, 'cos', 0.9, 1e-4, 0.1, 100, 'bn', '1')
    assert args.name == 'cifar10_train_weight0.1_c100' and args.path == os.path.join('.', 'training', '')
    assert parse_args(['--bn_weight', '1', '--c', '1']).name == 'cifar10_train_weight1.0_c1.0'  # as the original
    assert args.device == ('cuda' if torch.cuda.is_available() else 'cpu')
    assert {key: getattr(args, key) for key in DEFAULTS} == DEFAULTS  # the one table of the protocol's defaults


def test_every_flag_has_a_role_in_the_table_and_every_role_a_flag(monkeypatch):
    dests = [a.dest for a in flags.build_parser()._actions if a.dest != 'help']
    assert list(dict.fromkeys(dests)) == list(ROLES)  # --bn_affine and --no_bn_affine share one setting
    config = run_config(parse_args(['--resume']))
    assert 'resume' not in config and 'overwrite' not in config and 'cuda_graph' not in config  # train.py decides it
    monkeypatch.delitem(ROLES, 'sync_bn')
    with pytest.raises(KeyError, match='--sync_bn has no role'):
        flags.build_parser()


TINY = ['--dataset', 'fake', '--fake_size', '100', '--batch_size', '100', '--num_epochs', '1', '--network', 'mlp',
        '--bn_weight', '0.1', '--c', '100', '--input_norm', 'bn']  # the flags of sweep.py's 'proposed', one step


def test_a_new_experiment_flag_is_noticed_by_resume_sweep_and_report(tmp_path, monkeypatch, capsys):
    """Declaring a flag an experiment setting in experiment.ROLES is all it takes: a resume, a sweep and a report
    then refuse to mix runs that differ in it, naming it."""
    plain_parser = flags.build_parser

    def with_knob(**kwargs):
        parser = plain_parser(**kwargs)
        parser.add_argument('--knob', type=int, default=0)
        return parser

    monkeypatch.setitem(ROLES, 'knob', EXPERIMENT)
    monkeypatch.setattr(flags, 'build_parser', with_knob)
    assert 'knob' in experiment_settings()
    path = str(tmp_path) + '/'
    own = ['--path', path + 's', '--name', 'proposed_seed1', '--seed', '1', '--device', 'cpu']
    first = train.main(TINY + own)
    assert first['config']['knob'] == 0 and first['status'] == 'finished'

    with pytest.raises(SystemExit) as exit_info:  # 1. train.py --resume
        train.run(TINY + own + ['--resume', '--knob', '1'])
    assert exit_info.value.code == 2 and 'knob: 0 -> 1' in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:  # 2. the sweep's skip decision
        sweep.main(['--dry_run', '--configs', 'proposed', '--seeds', '1', '--gpus', '0', '--path', path, '--sweep', 's',
                    '--', *TINY, '--knob', '1'])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and 'proposed_seed1 already has finished results' in err and 'knob: 0 -> 1' in err

    results = tmp_path / 's' / 'fake' / 'results'  # 3. the report's grouping: seed 2 of the same label, with knob 1
    other = {**first, 'config': {**first['config'], 'name': 'proposed_seed2', 'seed': '2', 'knob': 1}}
    (results / 'proposed_seed2.json').write_text(json.dumps(other))
    with pytest.raises(ResultsError, match=r'runs named proposed differ in knob \(0.0, 1.0\)'):
        group_runs(load_runs([str(results)]))


def test_a_cuda_index_past_the_last_device_is_refused_with_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    with pytest.raises(ValueError, match=r'^--device cuda:1: only 1 CUDA device present$'):
        flags.resolve_device('cuda:1')
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    with pytest.raises(ValueError, match=r'^--device cuda:2: only 2 CUDA devices present$'):
        flags.resolve_device('cuda:2')


def test_validate_args_only_checks_and_complete_args_derives_on_a_copy(capsys):
    """validate_args neither changes nor prints (sweep.py and bench.py call it too); what follows from the flags
    (canonical seed, default name and path, torch's device name) comes from complete_args, on a copy."""
    args = flags.build_parser().parse_args(['--seed', '00', '--device', 'cpu', '--dataset', 'fashionmnist'])
    before = dict(vars(args))
    flags.validate_args(args)
    assert vars(args) == before and capsys.readouterr() == ('', '')
    completed = flags.complete_args(args)
    assert (completed.seed, completed.name, completed.path) == ('0', 'fashionmnist_train_weight0.1_c100',
                                                                os.path.join('.', 'training', ''))
    assert vars(args) == before
    bad = flags.build_parser().parse_args(['--batch_size', '0', '--device', 'cpu', '--resume', '--overwrite'])
    with pytest.raises(UsageError, match=r'--batch_size must be >= 1, got 0; .*contradict') as error:
        flags.validate_args(bad)
    assert error.value.status == 2
    with pytest.raises(UsageError, match='fp16 needs a CUDA device'):
        flags.validate_args(flags.build_parser().parse_args(['--device', 'cpu', '--precision', 'fp16']))


def test_help_says_what_each_form_of_a_switch_does():
    """--bn_affine and --no_bn_affine set one setting: neither shows '(default: True)', each says what it does."""
    text = ' '.join(flags.build_parser().format_help().split())
    assert '(default: True)' not in text and '(default: False)' not in text
    assert 'without scale and shift (affine=False), instead of the default --bn_affine' in text
    assert '(track_running_stats=True); the default' in text and '(default: 128)' in text
