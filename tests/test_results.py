"""The results record: the norm-statistics section it is handed, and the original's .txt with the flags as given."""
from revisiting_bn.experiment import run_config
from revisiting_bn.results import add_norm_statistics, results_text


def test_the_record_takes_the_statistics_section_it_is_handed():
    """NormStatistics measures; results.add_norm_statistics alone writes the record's section: what was measured
    once, then one entry per epoch, and the latest gammas."""
    record = {}
    for epoch, gamma in ((0, [0.1]), (1, [0.2])):
        add_norm_statistics(record, {'about': {'threshold': 3.0, 'images': 2, 'layers': ['0']},
                                     'epoch': {'epoch': epoch, 'layers': {'0': {'output_rms': epoch}}},
                                     'gamma': {'0': gamma}})
    assert record == {'norm_statistics': {'threshold': 3.0, 'images': 2, 'layers': ['0'],
                                          'epochs': [{'epoch': 0, 'layers': {'0': {'output_rms': 0}}},
                                                     {'epoch': 1, 'layers': {'0': {'output_rms': 1}}}],
                                          'gamma': {'0': [0.2]}}}


def test_the_original_results_file_keeps_the_flags_as_given_while_the_record_keeps_them_as_trained():
    """--bn_weight -1 and --c 0.5 train as 1.0 and 1.0; the JSON's config says so (the given values beside), the
    original code's .txt writes them as given, byte for byte as the original does."""
    config = run_config({'name': 'n', 'dataset': 'fake', 'network': 'mlp', 'batch_size': 8, 'num_epochs': 1,
                         'learning_rate': 0.1, 'scheduler': 'cos', 'momentum': 0.9, 'weight_decay': 1e-4,
                         'bn_weight': -1.0, 'c': 0.5, 'input_norm': 'bn'})
    assert (config['bn_weight'], config['c'], config['given']) == (1.0, 1.0, {'bn_weight': -1.0, 'c': 0.5})
    assert config['input_bn_weight'] == 1.0  # -1 x 0.58 <= 0: the input BN starts at 1.0, as in the original
    text = results_text(config, [])
    assert 'BN Intial Scale: -1.0,,,, \n' in text and 'LR Reduction Value: 0.5,,,, \n' in text
