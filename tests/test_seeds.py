"""Seeds: the last 32 bits of MD5, unique for 0..88265, and every generator seeded from them."""
import hashlib
import os
import random

import numpy as np
import torch

from revisiting_bn.seeds import make_complex, make_deterministic


def test_make_complex_is_last_32_bits_of_md5():
    assert make_complex(1) == 0x6f75849b == int(hashlib.md5(b'1').hexdigest()[-8:], 16)
    assert make_complex('1') == make_complex(1)
    assert 0 <= make_complex(12345) < 2 ** 32


def test_make_complex_unique_for_0_to_88265_as_documented():
    values = [make_complex(i) for i in range(88266)]
    assert len(set(values)) == 88266
    assert make_complex(88266) in set(values)  # the first collision, which is why the range stops there


def test_make_complex_verbose_prints(capsys):
    make_complex(3, verbose=True)
    value = make_complex(3)
    assert capsys.readouterr().out == f'Original seed: 3, Complex seed: {value}, Binary value: {value:032b}\n'


def draw():
    return random.random(), np.random.rand(), torch.rand(3)


def test_make_deterministic_seeds_every_rng():
    assert make_deterministic(7) == make_complex(7)
    first = draw()
    make_deterministic('7')
    second = draw()
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
    make_deterministic(8)
    third = draw()
    assert third[0] != first[0] and not torch.equal(third[2], first[2])
    assert os.environ['PYTHONHASHSEED'] == str(make_complex(8))
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
