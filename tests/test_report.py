"""report.py and t_test.py's command line on result files: the paper's table, pairing by seed, plots, refusals."""
import csv
import functools
import json

import numpy as np
import pytest
import torch
from scipy import stats

import report
from revisiting_bn import t_test
from conftest import README_BASELINE, README_PROPOSED
from revisiting_bn.networks import construct_network
from revisiting_bn.report_figures import bn_scales
from revisiting_bn.results import load_runs


def write_run(folder, config, seed, accuracy, final=None, status='finished', epochs=3, weights=True):
    """A results JSON (and best weights) as train.py writes them, with chosen accuracies."""
    name = f'{config}_seed{seed}'
    bn_weight, c, norm = (1.0, 1.0, 'dataset') if config == 'baseline' else (0.1, 100.0, 'bn')
    results, networks = folder / 'fake' / 'results', folder / 'fake' / 'networks'
    results.mkdir(parents=True, exist_ok=True)
    networks.mkdir(parents=True, exist_ok=True)
    rows = [{'epoch': e, 'train_loss': 2.0 / e, 'val_loss': 2.1 / e, 'val_accuracy': accuracy - 3 + e,
             'test_accuracy': accuracy - 3 + e, 'learning_rate': 0.1} for e in range(1, epochs + 1)]
    record = {'config': {'name': name, 'seed': str(seed), 'dataset': 'fake', 'network': 'resnet18',
                         'bn_weight': bn_weight, 'c': c, 'input_norm': norm, 'num_epochs': epochs, 'batch_size': 128,
                         'learning_rate': 0.1},
              'status': status, 'epochs': rows, 'best_epoch': epochs, 'best_val_accuracy': accuracy,
              'test_accuracy_at_best': accuracy, 'final_test_accuracy': accuracy if final is None else final,
              'weights_file': str(networks / f'{name}-best.pt')}
    (results / f'{name}.json').write_text(json.dumps(record))
    if weights:
        torch.save(initial_weights(seed, bn_weight, norm), networks / f'{name}-best.pt')
    return record


@functools.lru_cache(maxsize=None)
def initial_weights(seed, bn_weight, norm):
    """ResNet-18's initial weights for ``seed`` (built once: building it is what takes the time)."""
    torch.manual_seed(seed)
    return construct_network('resnet18', 10, 'fake', bn_weight, norm).state_dict()


BASELINE = [90.1, 91.0, 89.5, 90.7, 90.2]
PROPOSED = [90.9, 91.4, 90.6, 90.8, 91.3, 92.0]  # seed 6 has no baseline partner


@pytest.fixture
def results(tmp_path):
    for seed, accuracy in enumerate(BASELINE, start=1):
        write_run(tmp_path, 'baseline', seed, accuracy, final=accuracy - 0.5)
    for seed, accuracy in enumerate(PROPOSED, start=1):
        write_run(tmp_path, 'proposed', seed, accuracy, weights=seed != 2)
    write_run(tmp_path, 'proposed', 7, 50.0, status='running')
    (tmp_path / 'fake' / 'results' / 'unrelated.json').write_text('{"speedup": 3}')
    return tmp_path


def test_report_table_pairs_by_seed_and_names_what_is_left_out(results, tmp_path):
    out = tmp_path / 'out'
    assert report.main([str(results / 'fake' / 'results'), '--out', str(out)]) == 0
    text = (out / 'report.md').read_text()
    mean, std = np.mean(BASELINE), np.std(BASELINE, ddof=1)
    assert (f'| baseline | fake | resnet18 | 3 | 128 | bn | 1 | 1 | dataset | fp32 eager | 5 | {mean:.2f} ± {std:.2f} |'
            in text)
    assert f'{np.mean(PROPOSED):.2f} ± {np.std(PROPOSED, ddof=1):.2f}' in text
    p_value = t_test.evaluate(PROPOSED[:5], BASELINE)
    difference = np.mean(np.subtract(PROPOSED[:5], BASELINE))
    assert p_value <= 0.05
    two_sided = t_test.evaluate(PROPOSED[:5], BASELINE, 'two-sided')
    assert two_sided == 2 * p_value  # SciPy doubles the smaller tail exactly; the mean difference is positive
    low, high = stats.ttest_rel(PROPOSED[:5], BASELINE).confidence_interval(0.95)
    assert f'| proposed vs baseline | best val. epoch | 5 | {difference:+.2f} | [{low:+.2f}, {high:+.2f}] |' in text
    assert f'| {p_value:.4g} * | {p_value:.4g} | ' in text  # one comparison: Holm changes nothing
    final = np.add(BASELINE, -0.5)  # the proposed runs end at their best accuracy, the baseline 0.5 below it
    final_p, final_two_sided = t_test.evaluate(PROPOSED[:5], final), t_test.evaluate(PROPOSED[:5], final, 'two-sided')
    assert f'| proposed vs baseline | final epoch | 5 | {difference + 0.5:+.2f} |' in text
    assert f'**proposed vs baseline** (5 paired seeds): mean difference {difference:+.2f} points' in text
    assert 'With 5 seeds, a gain below' in text and 'would likely go unseen' in text
    assert 'proposed: unfinished runs (left out) for seeds 7' in text
    assert 'proposed: seeds without a baseline partner (left out of the test): 6' in text
    rows = list(csv.DictReader((out / 'report.csv').open()))
    assert [r['configuration'] for r in rows] == ['baseline', 'proposed']
    assert float(rows[1]['p_value']) == p_value and rows[1]['significant'] == 'True'  # repr round-trips exactly
    assert float(rows[1]['p_value_two_sided']) == two_sided and rows[1]['arithmetic'] == 'fp32 eager'
    assert float(rows[1]['final_p_value']) == final_p and float(rows[1]['final_p_value_two_sided']) == final_two_sided
    assert rows[1]['paired_seeds'] == '1 2 3 4 5' and rows[1]['unpaired_seeds'] == '6'
    assert float(rows[0]['final_test_mean']) == np.mean(np.subtract(BASELINE, 0.5))  # the same float64 sums
    for png in ('paired_accuracies.png', 'differences.png', 'curves.png', 'bn_scales.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_weights_found_beside_copied_results(results, tmp_path):
    copied = tmp_path / 'copied'
    (results / 'fake').rename(copied)  # as if fetched from a cluster: weights_file paths are stale now
    runs = load_runs([str(copied / 'results')])
    from revisiting_bn.report_figures import best_weights_file
    found = [best_weights_file(r) for r in runs if r['label'] == 'baseline']
    assert all(f and f.startswith(str(copied)) for f in found)


def test_bn_scales_are_read_from_saved_weights():
    network = construct_network('resnet18', 10, 'fake', 0.2, 'bn')
    inputs, scales = bn_scales(network.state_dict())
    assert np.all(inputs == np.float32(0.2 * 0.58)) and inputs.size == 3 and scales.size == 4800
    assert np.all(scales == np.float32(0.2))


@pytest.mark.parametrize('norm, options, count', [('bn', {'track_running_stats': False}, 688),
                                                  ('mabn', {'B': 4, 'real_B': 8}, 688), ('none', {}, 0)])
def test_bn_scales_of_every_normalisation_kind(norm, options, count):
    """MABN (no running_mean) and BN without running statistics have scales too; no normalisation has none."""
    network = construct_network('resnet20', 10, 'fake', 0.3, 'bn', norm, options)
    inputs, scales = bn_scales(network.state_dict())
    assert inputs.size == 3 and scales.size == count and np.all(scales == np.float32(0.3))


def test_report_of_the_baseline_alone_says_there_is_nothing_to_compare(tmp_path):
    """A sweep's first finished runs may all be the baseline's: the report says so, not that it is missing."""
    write_run(tmp_path, 'baseline', 1, 90.0)
    assert report.main([str(tmp_path / 'fake' / 'results'), '--out', str(tmp_path / 'out'), '--no_plots']) == 0
    assert "No comparison: there are results of 'baseline' only" in (tmp_path / 'out' / 'report.md').read_text()


def test_report_of_a_configuration_without_normalisation(tmp_path):
    """With and without BN: the no-BN runs have no scales to plot, the baseline's panel is still drawn."""
    for seed, accuracy in enumerate(BASELINE, start=1):
        write_run(tmp_path, 'baseline', seed, accuracy)
        write_run(tmp_path, 'no_bn', seed, accuracy - 1 - seed / 10)
        torch.save(construct_network('resnet18', 10, 'fake', 1.0, 'dataset', 'none').state_dict(),
                   tmp_path / 'fake' / 'networks' / f'no_bn_seed{seed}-best.pt')
    assert report.main([str(tmp_path / 'fake' / 'results'), '--out', str(tmp_path / 'out')]) == 0
    assert (tmp_path / 'out' / 'bn_scales.png').exists()


def test_bad_result_sets(results, tmp_path, capsys):
    write_run(tmp_path / 'again', 'baseline', 1, 80.0)
    assert report.main([str(results / 'fake'), str(tmp_path / 'again'), '--out', str(tmp_path / 'o')]) == 1
    assert 'two results for baseline seed 1' in capsys.readouterr().err
    other = write_run(tmp_path / 'mixed', 'baseline', 9, 80.0)
    other['config']['bn_weight'] = 0.5
    (tmp_path / 'mixed' / 'fake' / 'results' / 'baseline_seed9.json').write_text(json.dumps(other))
    assert report.main([str(results / 'fake'), str(tmp_path / 'mixed'), '--out', str(tmp_path / 'o')]) == 1
    assert 'runs named baseline differ in bn_weight (0.5, 1.0)' in capsys.readouterr().err
    assert report.main([str(tmp_path / 'nothing_here'), '--out', str(tmp_path / 'o')]) == 1
    assert 'no such file or folder' in capsys.readouterr().err


def test_t_test_cli_numbers_and_result_files(results, capsys):
    numbers = ['--proposed', *map(str, README_PROPOSED), '--baseline', *map(str, README_BASELINE)]
    p = t_test.main(numbers)
    assert p == t_test.evaluate(README_PROPOSED, README_BASELINE)
    assert 'not significant' in capsys.readouterr().out
    folder = results / 'fake' / 'results'
    p = t_test.main(['--proposed', *[str(folder / f'proposed_seed{s}.json') for s in range(1, 7)],
                     '--baseline', str(folder / 'baseline_seed*.json')])
    out = capsys.readouterr().out
    assert p == t_test.evaluate(PROPOSED[:5], BASELINE)  # the same numbers, read back from the JSON files
    assert 'seeds without a partner, left out: 6' in out and 'significantly greater' in out
    p = t_test.main(numbers + ['--two_sided'])
    assert p == t_test.evaluate(README_PROPOSED, README_BASELINE, 'two-sided')
    assert 'two-sided paired t-test' in capsys.readouterr().out
    for argv, message in ((['--proposed', '1', '2', '--baseline', '1'], 'same length'),
                          (['--proposed', str(folder), '--baseline', '1', '2'], 'several configurations'),
                          (['--proposed', str(folder / 'proposed_seed*.json'), '--baseline', '1', '2'],
                           'unfinished runs for seeds 7')):
        with pytest.raises(SystemExit) as exit_info:
            t_test.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_paired_plot_title_writes_p_as_the_table_does_and_names_the_test(monkeypatch, tmp_path):
    from revisiting_bn import report_figures
    titles = []
    monkeypatch.setattr(report_figures, 'save', lambda fig, path: titles.append(
        (fig.axes[0].get_title(), fig._suptitle.get_text())))
    groups = {name: {s: {'record': {'test_accuracy_at_best': 90.0 + s + offset}} for s in (1, 2)}
              for name, offset in (('baseline', 1.0), ('proposed', 0.0))}
    comparison = {'configuration': 'proposed', 'paired_seeds': [1, 2], 'p_value': 0.99993, 'p_holm': 0.99993,
                  'significant': False}
    report_figures.paired_accuracies(groups, [comparison], 'baseline', tmp_path / 'p.png', 'fake, mlp, 1 epoch')
    (panel, title), = titles
    assert panel == 'proposed\np = 0.9999'
    assert 'one-sided paired t-test' in title and title.endswith('fake, mlp, 1 epoch')


def test_an_unreadable_results_file_is_named_and_refused_unless_left_out_on_purpose(results, tmp_path, capsys):
    """A truncated JSON among the others: named, exit 1, no report; with --skip_unreadable the report is made
    without it and report.md says so."""
    broken = results / 'fake' / 'results' / 'baseline_seed9.json'
    broken.write_text('{"config": {"name": "baseline_seed9", "se')
    out = tmp_path / 'out'
    assert report.main([str(results / 'fake' / 'results'), '--out', str(out)]) == 1
    err = capsys.readouterr().err
    assert f'cannot read 1 results file: {broken} (JSONDecodeError' in err and not out.exists()
    assert report.main([str(results / 'fake' / 'results'), '--out', str(out), '--skip_unreadable']) == 0
    assert f'- left out, unreadable (--skip_unreadable): {broken} (JSONDecodeError' in (out / 'report.md').read_text()


def test_missing_weights_leave_no_stale_figure_and_say_why(results, tmp_path, capsys):
    """Without the best weights (copied or committed results), bn_scales.png is not made, the output and
    report.md say why, and an older bn_scales.png in --out is removed, not left beside the new report."""
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'bn_scales.png').write_bytes(b'an older figure')
    for weights in (results / 'fake' / 'networks').iterdir():
        weights.unlink()
    assert report.main([str(results / 'fake' / 'results'), '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert not (out / 'bn_scales.png').exists() and (out / 'curves.png').exists()
    assert 'with the plots that the results allow' in printed and 'bn_scales.png not made: no gammas recorded in the ' \
        'results and no best weights found' in printed
    assert '- figure bn_scales.png not made: no gammas recorded' in (out / 'report.md').read_text()
    assert 'xhat.png not made: no finished run recorded per-layer statistics' in printed


def test_the_same_results_given_twice_are_one_run(results):
    folder = str(results / 'fake' / 'results')
    once, twice = load_runs([folder]), load_runs([folder, folder, f'{folder}/baseline_seed1.json'])
    assert sorted(r['file'] for r in once) == sorted(r['file'] for r in twice)


def test_the_observations_figures_come_from_the_json_alone(tmp_path, capsys):
    """Runs that recorded their per-layer statistics: bn_scales.png, gamma_distance.png and xhat.png are drawn
    with no weights at hand (a fresh clone of committed results), and nothing is said missing."""
    import shutil
    import train
    from conftest import FAST
    for config, flags in (('baseline', ['--bn_weight', '1', '--c', '1', '--input_norm', 'dataset']), ('proposed', [])):
        for seed in (1, 2):
            train.main(FAST + flags + ['--num_epochs', '2', '--seed', str(seed), '--path', str(tmp_path), '--name',
                                       f'{config}_seed{seed}'])
    shutil.rmtree(tmp_path / 'fake' / 'networks')
    capsys.readouterr()
    assert report.main([str(tmp_path / 'fake' / 'results'), '--out', str(tmp_path / 'out')]) == 0
    assert 'not made' not in capsys.readouterr().out
    for figure in ('bn_scales.png', 'gamma_distance.png', 'xhat.png'):
        assert (tmp_path / 'out' / figure).stat().st_size > 10000


def scipy_figures(ours, theirs):
    """The report's figures of one comparison, computed here straight from SciPy (and a textbook Holm)."""
    d = np.subtract(ours, theirs)
    n, sd = d.size, d.std(ddof=1)
    critical = stats.t.ppf(0.95, n - 1)
    power = lambda delta, k: stats.nct.sf(stats.t.ppf(0.95, k - 1), k - 1, delta / sd * np.sqrt(k))  # noqa: E731
    from scipy.optimize import brentq
    mdd = brentq(lambda delta: power(delta, n) - 0.8, 1e-9, 100 * sd)
    needed = next((k for k in range(2, 100000) if power(d.mean(), k) >= 0.8), None) if d.mean() > 0 else None
    low, high = stats.ttest_rel(ours, theirs).confidence_interval(0.95)
    return {'mean_paired_difference': d.mean(), 'ci95_low': low, 'ci95_high': high, 'effect_size_dz': d.mean() / sd,
            'p_value': stats.ttest_rel(ours, theirs, alternative='greater').pvalue,
            'wilcoxon_p': stats.wilcoxon(ours, theirs, alternative='greater').pvalue,
            'min_detectable_difference': mdd, 'seeds_needed': needed, 'critical': critical}


def test_every_figure_of_every_comparison_equals_scipys_and_holm_adjusts_over_the_table(tmp_path):
    """Three configurations against one baseline with known accuracies: report.csv's interval, d_z, Wilcoxon,
    Holm-adjusted p, smallest detectable difference and seeds needed equal SciPy's, for both measures."""
    base = [90.1, 91.0, 89.5, 90.7, 90.2, 90.4]
    others = {'proposed': [90.9, 91.4, 90.6, 90.8, 91.3, 91.0], 'small': [90.3, 91.1, 89.4, 90.9, 90.3, 90.6],
              'worse': [89.0, 90.1, 89.0, 89.9, 89.5, 89.2]}
    for seed, accuracy in enumerate(base, start=1):
        write_run(tmp_path, 'baseline', seed, accuracy, final=accuracy - 0.25, weights=False)
    for label, accuracies in others.items():
        for seed, accuracy in enumerate(accuracies, start=1):
            write_run(tmp_path, label, seed, accuracy, weights=False)
    assert report.main([str(tmp_path / 'fake'), '--out', str(tmp_path / 'out'), '--no_plots']) == 0
    rows = {r['configuration']: r for r in csv.DictReader((tmp_path / 'out' / 'report.csv').open())}
    for prefix, reference in (('', base), ('final_', np.subtract(base, 0.25))):
        expected = {label: scipy_figures(accuracies, reference) for label, accuracies in others.items()}
        ordered = sorted(others, key=lambda label: expected[label]['p_value'])
        m, running = len(ordered), 0.0
        for rank, label in enumerate(ordered):  # Holm, as a textbook writes it
            running = max(running, min(1.0, (m - rank) * expected[label]['p_value']))
            expected[label]['p_holm'] = running
        for label, figures in expected.items():
            row = rows[label]
            for name in ('mean_paired_difference', 'ci95_low', 'ci95_high', 'effect_size_dz', 'p_value',
                         'wilcoxon_p', 'p_holm', 'min_detectable_difference'):
                assert float(row[prefix + name]) == pytest.approx(figures[name], rel=1e-9, abs=1e-12), (label, name)
            needed = row[prefix + 'seeds_needed']
            assert (int(needed) if needed else None) == figures['seeds_needed'], (label, prefix)
    assert rows['worse']['seeds_needed'] == '' and rows['baseline']['p_value'] == ''


def test_only_like_is_tested_against_like(tmp_path):
    """A second protocol in the same folder (other network, other epochs) gets its own table and baseline; a
    configuration whose protocol has no baseline is listed with what differs and never tested; --may_differ lets a
    study's own setting differ."""
    for seed, accuracy in enumerate(BASELINE, start=1):
        write_run(tmp_path, 'baseline', seed, accuracy, weights=False)
        write_run(tmp_path, 'proposed', seed, accuracy + 0.3 + seed / 10, weights=False)
        long = write_run(tmp_path / 'long', 'baseline', seed, accuracy + 1, epochs=10, weights=False)
        for label, offset, network in (('proposed', 0.5 + seed / 20, 'resnet18'), ('tv_effnet', -60, 'tv:efficientnet_b0')):
            record = write_run(tmp_path / 'long', label, seed, accuracy + offset, epochs=10 if label == 'proposed' else 2,
                               weights=False)
            record['config']['network'] = network
            folder = tmp_path / 'long' / 'fake' / 'results'
            (folder / f'{label}_seed{seed}.json').write_text(json.dumps(record))
    out = tmp_path / 'out'
    assert report.main([str(tmp_path / 'fake'), str(tmp_path / 'long'), '--out', str(out), '--no_plots']) == 0
    text = (out / 'report.md').read_text()
    assert text.startswith('3 protocols') and '## P1: network resnet18, num_epochs 3' in text
    assert text.count('| proposed vs baseline | best val. epoch |') == 2  # each against its own baseline
    assert 'tv_effnet: not tested: no baseline with the same protocol; its runs differ in network' in text
    assert 'network: resnet18 (baseline) -> tv:efficientnet_b0; num_epochs: 3 (baseline) -> 2' in text and 'tv_effnet vs' not in text
    rows = list(csv.DictReader((out / 'report.csv').open()))
    assert [(r['protocol'], r['configuration']) for r in rows] == [('P1', 'baseline'), ('P1', 'proposed'),
                                                                   ('P2', 'baseline'), ('P2', 'proposed'),
                                                                   ('P3', 'tv_effnet')]
    p2 = [r for r in rows if r['protocol'] == 'P2' and r['configuration'] == 'proposed'][0]
    expected = stats.ttest_rel([a + 0.5 + s / 20 for s, a in enumerate(BASELINE, 1)], np.add(BASELINE, 1),
                               alternative='greater').pvalue
    assert float(p2['p_value']) == pytest.approx(expected) and rows[-1]['untested_because'].startswith('no baseline')
    # learning rate varied on purpose: without --may_differ a protocol apart, with it tested against the baseline
    for seed, accuracy in enumerate(BASELINE, start=1):
        record = write_run(tmp_path, 'lr05', seed, accuracy + 0.2, weights=False)
        record['config']['learning_rate'] = 0.05
        (tmp_path / 'fake' / 'results' / f'lr05_seed{seed}.json').write_text(json.dumps(record))
    assert report.main([str(tmp_path / 'fake'), '--out', str(out), '--no_plots']) == 0
    assert 'lr05: not tested' in (out / 'report.md').read_text()
    assert report.main([str(tmp_path / 'fake'), '--out', str(out), '--no_plots', '--may_differ', 'learning_rate']) == 0
    assert '| lr05 vs baseline | best val. epoch | 5 |' in (out / 'report.md').read_text()


HOLM_DIFFERENCES = {'near': [0.5, 0.1, 0.6, -0.1, 0.4],  # p = 0.0414 alone, 0.0829 after Holm over 3
                    'clear': [1.0, 1.1, 0.9, 1.2, 1.0],  # p = 1.7e-05, 5.1e-05 after Holm
                    'none': [-0.2, 0.1, 0.05, -0.1, 0.1]}


def test_words_marks_and_stars_follow_holm_over_the_family(tmp_path):
    """Several comparisons: "significantly greater" only where Holm's adjusted p allows it, a raw p <= 0.05 that
    Holm does not keep said as such; the table's star sits on Holm's p, and report.csv says which held."""
    for seed, accuracy in enumerate(BASELINE, start=1):
        write_run(tmp_path, 'baseline', seed, accuracy, weights=False)
        for label, differences in HOLM_DIFFERENCES.items():
            write_run(tmp_path, label, seed, accuracy + differences[seed - 1], weights=False)
    out = tmp_path / 'out'
    assert report.main([str(tmp_path / 'fake'), '--out', str(out), '--no_plots']) == 0
    text = (out / 'report.md').read_text()
    assert ('**near vs baseline** (5 paired seeds): mean difference +0.30 points' in text and
            'p = 0.04143, not significant after Holm over 3 comparisons (Holm p = 0.08286;' in text)
    assert 'significantly greater after Holm over 3 comparisons (p = 1.706e-05, 5.118e-05 after Holm;' in text
    assert '| near vs baseline | best val. epoch | 5 | +0.30 | ' in text and '| 0.04143 | 0.08286 |' in text  # no star
    assert '| 1.706e-05 | 5.118e-05 * |' in text
    with open(out / 'report.csv') as f:
        rows = {row['configuration']: row for row in csv.DictReader(f)}
    assert (rows['near']['significant'], rows['near']['significant_before_holm']) == ('False', 'True')
    assert (rows['clear']['significant'], rows['none']['significant']) == ('True', 'False')


def test_with_one_comparison_the_papers_verdict_is_unchanged(tmp_path):
    for seed, accuracy in enumerate(BASELINE, start=1):
        write_run(tmp_path, 'baseline', seed, accuracy, weights=False)
        write_run(tmp_path, 'near', seed, accuracy + HOLM_DIFFERENCES['near'][seed - 1], weights=False)
    assert report.main([str(tmp_path / 'fake'), '--out', str(tmp_path / 'out'), '--no_plots']) == 0
    text = (tmp_path / 'out' / 'report.md').read_text()
    assert 'significantly greater (p = 0.04143, 0.04143 after Holm; Wilcoxon p = ' in text
    assert '| 0.04143 * | 0.04143 |' in text


def split_runs(folder, splits):
    """The README example's accuracies as runs of the baseline and proposed, seed s with split seed splits(label, s)."""
    for seed, (mine, theirs) in enumerate(zip(README_PROPOSED, README_BASELINE), start=1):
        for label, accuracy in (('proposed', mine), ('baseline', theirs)):
            record = write_run(folder, label, seed, accuracy, weights=False)
            record['config']['split_seed'] = splits(label, seed)
            (folder / 'fake' / 'results' / f'{label}_seed{seed}.json').write_text(json.dumps(record))


def test_the_report_names_the_sources_of_variation_and_pairs_only_runs_of_one_split(tmp_path, capsys):
    split_runs(tmp_path, lambda label, seed: seed)  # sweep.py --vary_split
    assert report.main([str(tmp_path / 'fake'), '--out', str(tmp_path / 'out'), '--no_plots']) == 0
    text = (tmp_path / 'out' / 'report.md').read_text()
    assert ('Sources of variation: each seed drew the initial weights, the data order and the flips, and the '
            'validation split too (sweep.py --vary_split)') in text
    split_runs(tmp_path, lambda label, seed: 0 if label == 'proposed' and seed == 5 else seed)
    assert report.main([str(tmp_path / 'fake'), '--out', str(tmp_path / 'out'), '--no_plots']) == 1
    assert 'runs named proposed mix validation splits' in capsys.readouterr().err
    split_runs(tmp_path, lambda label, seed: 0)  # the paper's fixed split, for both
    assert report.main([str(tmp_path / 'fake'), '--out', str(tmp_path / 'out'), '--no_plots']) == 0
    assert 'the validation split was fixed (split seed 0) for every seed' in (tmp_path / 'out' / 'report.md').read_text()
    split_runs(tmp_path, lambda label, seed: seed if label == 'proposed' else 0)  # one fixed, one varied
    assert report.main([str(tmp_path / 'fake'), '--out', str(tmp_path / 'out'), '--no_plots']) == 0
    text = (tmp_path / 'out' / 'report.md').read_text()
    assert 'proposed vs baseline: seeds whose two runs used different validation splits, so they are no pair (left ' \
           'out of the test): 1, 2, 3, 4, 5' in text


def test_prob_improvement_in_words_table_and_csv(tmp_path):
    """The README example: proposed beats the baseline on 3 of 5 seeds, ties on one: P(A>B) (3 + 0.5) / 5 = 0.7."""
    from revisiting_bn.t_test import prob_improvement
    split_runs(tmp_path, lambda label, seed: 0)
    assert report.main([str(tmp_path / 'fake'), '--out', str(tmp_path / 'out'), '--no_plots']) == 0
    p, low, high = prob_improvement(README_PROPOSED, README_BASELINE)
    assert p == pytest.approx(0.7)
    text = (tmp_path / 'out' / 'report.md').read_text()
    assert f'beats baseline on 3 of 5 seeds (1 tie): P(A>B) 0.70 [{low:.2f}, {high:.2f}]' in text
    assert f'| 0.70 [{low:.2f}, {high:.2f}] |' in text
    with open(tmp_path / 'out' / 'report.csv') as f:
        row = next(r for r in csv.DictReader(f) if r['configuration'] == 'proposed')
    assert float(row['prob_improvement']) == pytest.approx(0.7)
    assert (float(row['prob_improvement_ci95_low']), float(row['prob_improvement_ci95_high'])) == (low, high)
    assert row['final_prob_improvement'] != ''


def test_the_words_name_the_configuration_compared_against(tmp_path):
    split_runs(tmp_path, lambda label, seed: 0)
    assert report.main([str(tmp_path / 'fake'), '--out', str(tmp_path / 'out'), '--no_plots',
                        '--baseline', 'proposed']) == 0
    text = (tmp_path / 'out' / 'report.md').read_text()
    assert '**baseline vs proposed** (5 paired seeds)' in text
    assert 'beats proposed on 1 of 5 seeds (1 tie)' in text


def test_across_protocols_pools_one_configuration_tested_in_several(tmp_path):
    """The committed MLP (180 epochs) and ResNet-20 (5 epochs) pairs: each against its own baseline, side by side,
    then pooled with a stratified bootstrap; across_protocols.csv and .png written."""
    import os
    from conftest import ROOT
    from revisiting_bn.t_test import prob_improvement, stratified_prob_improvement
    sweeps = [os.path.join(ROOT, 'experiments', name) for name in ('mlp_paper', 'resnet20_paper')]
    assert report.main([*sweeps, '--out', str(tmp_path / 'out')]) == 0
    with open(tmp_path / 'out' / 'across_protocols.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(r['configuration'], r['protocol']) for r in rows] == [('proposed', 'P1'), ('proposed', 'P2'),
                                                                   ('proposed', 'all')]
    pairs = []
    for row, sweep in zip(rows, sweeps):
        runs = load_runs([sweep])
        values = {label: {r['seed']: r['record']['test_accuracy_at_best'] for r in runs if r['label'] == label}
                  for label in ('proposed', 'baseline')}
        seeds = sorted(values['proposed'])
        pairs.append(([values['proposed'][s] for s in seeds], [values['baseline'][s] for s in seeds]))
        assert float(row['prob_improvement']) == pytest.approx(prob_improvement(*pairs[-1])[0])
    assert float(rows[2]['prob_improvement']) == pytest.approx(stratified_prob_improvement(pairs)[0])
    assert (rows[2]['significantly_better'], rows[2]['significantly_worse']) == ('0', '1')  # ResNet-20's lower
    assert '## Across protocols' in (tmp_path / 'out' / 'report.md').read_text()
    assert (tmp_path / 'out' / 'across_protocols.png').read_bytes()[:4] == b'\x89PNG'
