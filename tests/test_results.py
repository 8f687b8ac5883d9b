"""The results record: where a run stands, read from its files, and the norm-statistics section it is handed."""
import json
import os

import sweep
from revisiting_bn.results import add_norm_statistics, standing
from revisiting_bn.runs import output_paths


def test_where_a_run_stands_is_read_from_its_files_once_for_train_and_sweep(tmp_path):
    """results.standing: new (no files), unfinished (results, no checkpoint), resume (a checkpoint), finished (the
    record says so, checkpoint or not); train.py's start and the sweep's plan both read it."""
    paths = output_paths(str(tmp_path), 'fake', 'run')
    os.makedirs(paths['results'])
    os.makedirs(paths['networks'])
    run = {'name': 'run', 'paths': paths, 'settings': {}}
    assert standing(paths).kind == 'new' and sweep.state(run) == 'new'
    with open(paths['json'], 'w') as f:
        json.dump({'config': {}, 'status': 'running'}, f)
    assert standing(paths).kind == 'unfinished' and sweep.state(run) == 'new'  # train.py --resume refuses it
    open(paths['checkpoint'], 'wb').close()
    assert standing(paths).kind == 'resume' and sweep.state(run) == 'resume'
    with open(paths['json'], 'w') as f:
        json.dump({'config': {}, 'status': 'finished'}, f)
    now = standing(paths)
    assert (now.kind, now.has_checkpoint, now.record['status']) == ('finished', True, 'finished')
    assert sweep.state(run) == 'finished'


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
