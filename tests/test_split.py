"""The paper's validation split drawn without torch, as scikit-learn draws it with the MD5-made seed, and kept."""
import os
import subprocess
import sys

import numpy as np
from sklearn.model_selection import train_test_split

from conftest import ROOT
from revisiting_bn.seeds import make_complex
from revisiting_bn.split import draw_split, split_cache_file


def test_a_split_is_drawn_without_torch_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv('REVISITING_BN_CACHE', str(tmp_path))
    code = ('import sys, numpy as np; from revisiting_bn.split import draw_split; '
            'train, val = draw_split(np.arange(300) % 10, 2); print("torch" in sys.modules, len(train), len(val))')
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))
    assert done.stdout.split() == ['False', '270', '30'], done.stderr
    kept = split_cache_file(np.arange(300) % 10, 2)
    assert kept.startswith(str(tmp_path)) and os.path.isfile(kept)


def test_draw_split_is_scikit_learns_stratified_split_with_the_md5_seed(tmp_path, monkeypatch):
    monkeypatch.setenv('REVISITING_BN_CACHE', str(tmp_path))
    labels = np.repeat(np.arange(10), 40)
    expected = train_test_split(np.arange(400), test_size=0.1, stratify=labels, random_state=make_complex(0))
    for _ in range(2):  # drawn, then read back from the cache
        assert [d.tolist() for d in draw_split(labels)] == [e.tolist() for e in expected]
