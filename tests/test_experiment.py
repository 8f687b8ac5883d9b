"""What a run is: the settings that define an experiment, in --help's order, and one answer to "same experiment?"."""
from revisiting_bn.experiment import (CONTROL, ROLES, differing_settings, experiment_settings, run_config,
                                      setting_differences)


def test_the_experiment_settings_are_those_that_define_a_result():
    assert experiment_settings() == ('dataset', 'network', 'batch_size', 'num_epochs', 'learning_rate', 'scheduler',
                                     'momentum', 'weight_decay', 'bn_weight', 'c', 'input_norm', 'norm',
                                     'mabn_real_batch', 'train_only_bn', 'bn_affine', 'bn_running_stats', 'seed',
                                     'split_seed', 'image_size', 'fake_size', 'precision', 'channels_last', 'sync_bn',
                                     'input_bn_weight')  # the last derived: the input BN's initial scale
    assert [name for name, role in ROLES.items() if role == CONTROL] == ['evaluate', 'resume', 'overwrite',
                                                                         'change_num_epochs']


def test_setting_differences_name_each_setting():
    saved = {'bn_weight': 0.1, 'c': 100, 'seed': '1', 'path': 'a', 'device': 'cpu'}
    current = {'bn_weight': 1.0, 'c': 100.0, 'seed': '2', 'path': 'b', 'device': 'cuda'}
    assert setting_differences(saved, current) == ["bn_weight: 0.1 -> 1.0", "seed: '1' -> '2'"]  # c 100 == 100.0
    assert setting_differences(saved, current, ignore=('seed',)) == ["bn_weight: 0.1 -> 1.0"]  # path is no setting
    assert differing_settings([saved, current, {**current, 'bn_weight': 0.5}], ignore=('seed',)) == {
        'bn_weight': [0.1, 1.0, 0.5]}


def test_the_recorded_configuration_leaves_out_the_control_settings_only():
    settings = {'dataset': 'fake', 'path': 'p', 'resume': True, 'overwrite': False, 'threads': 2}
    assert run_config(settings) == {'dataset': 'fake', 'path': 'p', 'threads': 2, 'split_seed': 0}  # as it trains
