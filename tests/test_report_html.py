"""report.html: one self-contained page with every figure inside and its provenance, as a real browser shows it; the
figures readable at 15 configurations."""
import base64
import os
import re
import shutil
import subprocess

import pytest
from PIL import Image

import report
from conftest import ROOT

ABLATION = os.path.join(ROOT, 'experiments', 'ablation_mlp')  # 15 configurations and the baseline, 5 seeds


@pytest.fixture(scope='module')
def grid_report(tmp_path_factory):
    out = tmp_path_factory.mktemp('grid') / 'report'
    assert report.main([ABLATION, '--out', str(out)]) == 0
    return out


def test_the_page_is_self_contained_and_holds_every_figure_and_its_provenance(grid_report):
    page = (grid_report / 'report.html').read_text()
    assert not re.search(r'<script|<link|@import|url\(|src="(?!data:)', page)  # nothing fetched from anywhere
    figures = sorted(p.name for p in grid_report.glob('*.png'))
    assert len(figures) == 7
    for figure in figures:  # inside the page, byte for byte, under its caption
        data = base64.b64encode((grid_report / figure).read_bytes()).decode()
        assert f'<img alt="{figure}" src="data:image/png;base64,{data}">' in page, figure
        assert f'<figcaption><strong>{figure}</strong>: ' in page
    title = re.search(r'<h1>(.*?)</h1>', page).group(1)
    assert title == 'Report: fashionmnist, mlp, 30 epochs, batch 128, seeds 1-5 (sweep ablation_mlp)'
    for fact in ('Protocol', 'Seeds', 'Test', 'Code version', 'torch', 'torchvision', 'Python', 'Devices', 'When',
                 'Commands'):
        assert f'<dt>{fact}</dt><dd>' in page, fact
    assert 'one-sided paired t-test on the per-seed differences' in page and 'Holm-adjusted over 15 comparisons' in page
    assert 'Intel(R) Xeon(R) Processor' in page and '2.14.1' in page and '2026-12-04' in page
    assert page.count('<li><code>') >= 80 and '--name bn_weight0.1_c100_seed1 --seed 1' in page  # each run's command
    markdown = (grid_report / 'report.md').read_text()  # the same tables as report.md
    for row in re.findall(r'^\| (bn_weight\S+ vs baseline) \| best val\. epoch \| 5 \| (\S+) \|', markdown, re.M):
        assert f'<td>{row[0]}</td><td>best val. epoch</td><td>5</td><td>{row[1]}</td>' in page


def test_figures_stay_readable_at_15_configurations(grid_report):
    """No figure wider than 2400 pixels, or than 4 times its height; every panel figure in rows of at most 4."""
    for figure in grid_report.glob('*.png'):
        width, height = Image.open(figure).size
        assert width <= 2400 and width <= 4 * height, (figure.name, width, height)


@pytest.mark.skipif(shutil.which('chromium') is None, reason="Debian's chromium is not installed")
def test_a_real_browser_renders_the_page(grid_report, tmp_path):
    """Headless Chromium opens report.html from disk and draws it: the screenshot is not blank (text and figures
    make many colours and a fair share of non-white pixels)."""
    shot = tmp_path / 'page.png'
    subprocess.run(['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                    '--disable-component-update', '--no-first-run', '--disable-sync', f'--user-data-dir={tmp_path}/u',
                    '--hide-scrollbars', '--window-size=1280,2400', f'--screenshot={shot}',
                    f'file://{grid_report}/report.html'], capture_output=True, timeout=120)
    image = Image.open(shot).convert('RGB')
    small = image.resize((320, 600))
    pixels = [small.getpixel((x, y)) for x in range(320) for y in range(600)]
    dark = sum(1 for p in pixels if sum(p) < 600) / len(pixels)
    assert image.size == (1280, 2400) and len(set(pixels)) > 50 and dark > 0.02, (len(set(pixels)), dark)
