"""The repository's shape: at the root what a user runs or imports, everything else in the package revisiting_bn,
which installs as one top-level name, never imports a root module, has no import cycle, and lives beside a user's
own modules of any name."""
import ast
import glob
import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = 'revisiting_bn'
SCRIPTS = ('train', 'sweep', 'report', 'bench')
DESIGN_CARD = ('batch_norm', 'networks', 'weight_decay_and_learning_rate', 'seeds', 't_test')
# A user's project with modules named like this package's internals (and more): each one raises if imported.
USER_MODULES = ('data', 'errors', 'engine', 'results', 'runs', 'checkpoint', 'utils', 'cli', 'flags', 'protocol',
                'experiment', 'distributed', 'fast_path', 'image_folder', 'norm_statistics', 'cpu_threads',
                'report_figures', 'norm_figures', 'revisiting_bn_helpers')


def user_project(folder):
    folder.mkdir(exist_ok=True)
    for name in USER_MODULES:
        (folder / f'{name}.py').write_text(f'raise ImportError("the user\'s own {name}.py was imported")\n')
    return folder


def modules():
    """{module name: path} of the root's .py files and the package's modules."""
    found = {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, '*.py'))}
    found.update({f'{PACKAGE}.{os.path.basename(p)[:-3]}': p for p in glob.glob(os.path.join(ROOT, PACKAGE, '*.py'))})
    return found


def imports_of(name, path):
    """The repository modules that ``name`` imports, at the top or inside functions, relative imports resolved."""
    known = modules()
    package = name.rsplit('.', 1)[0] if name.startswith(PACKAGE + '.') else None
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package if node.level else node.module
            if node.level and node.module:
                base = f'{package}.{node.module}'
            targets = [base] + [f'{base}.{alias.name}' for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def test_the_root_holds_the_scripts_and_the_design_card_modules_only():
    assert sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, '*.py'))) == sorted(
        SCRIPTS + DESIGN_CARD)


@pytest.mark.parametrize('name', DESIGN_CARD)
def test_each_design_card_module_is_the_packages_module_under_its_old_name(name):
    door, inside = importlib.import_module(name), importlib.import_module(f'{PACKAGE}.{name}')
    assert door.__all__ == inside.__all__ and inside.__all__
    assert all(getattr(door, attribute) is getattr(inside, attribute) for attribute in inside.__all__)
    assert len(open(os.path.join(ROOT, f'{name}.py')).read().splitlines()) <= 12  # a door, not a second home


def in_cycles(graph):
    """The modules of ``graph`` ({module: the modules it imports}) that import themselves, through others or not."""
    def reaches(start, target, seen=()):
        return any(d == target or (d not in seen and reaches(d, target, (*seen, d))) for d in graph.get(start, ()))

    return [name for name in sorted(graph) if reaches(name, name)]


def layers(graph):
    """How many layers deep the import graph is: a module that imports none is in layer 1."""
    depth = {}

    def layer(name):
        if name not in depth:
            depth[name] = 1 + max((layer(d) for d in graph[name]), default=0)
        return depth[name]

    return max(layer(name) for name in graph)


def test_the_package_never_imports_a_root_module_and_nothing_imports_itself_back():
    graph = {name: imports_of(name, path) for name, path in modules().items()}
    into_root = {name: sorted(d for d in deps if not d.startswith(PACKAGE)) for name, deps in graph.items()
                 if name.startswith(PACKAGE)}
    assert {name: deps for name, deps in into_root.items() if deps} == {}
    assert in_cycles(graph) == []
    assert layers(graph) <= 8


def test_a_cycle_is_noticed(tmp_path, monkeypatch):
    """The checks above can fail: two package modules that import each other (relatively, one inside a function)
    are found, and so is a package module importing a root one."""
    (tmp_path / 'a.py').write_text('from .b import x\nimport train\n')
    (tmp_path / 'b.py').write_text('def f():\n    from . import a\n')
    fake = {f'{PACKAGE}.a': tmp_path / 'a.py', f'{PACKAGE}.b': tmp_path / 'b.py', 'train': tmp_path / 'b.py'}
    monkeypatch.setattr(sys.modules[__name__], 'modules', lambda: fake)
    graph = {name: imports_of(name, path) for name, path in fake.items() if name != 'train'}
    assert graph == {f'{PACKAGE}.a': {f'{PACKAGE}.b', 'train'}, f'{PACKAGE}.b': {f'{PACKAGE}.a'}}
    assert in_cycles(graph) == [f'{PACKAGE}.a', f'{PACKAGE}.b']


def run_python(code, cwd, pythonpath):
    return subprocess.run([sys.executable, '-c', code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': pythonpath})


def test_the_t_test_imports_without_torch(tmp_path):
    user_project(tmp_path)
    code = ('import sys, t_test\n'
            'from revisiting_bn import evaluate\n'
            'assert evaluate([91.7, 93.4, 92.2, 90.0, 91.9], [91.0, 92.7, 92.2, 90.1, 91.5]) < 0.06\n'
            'print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")))')
    completed = run_python(code, tmp_path, ROOT)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == '[]'


def test_train_py_runs_by_its_path_from_a_users_project(tmp_path):
    """python /path/to/train.py from a folder with the user's own data.py, engine.py, ...: it never imports them."""
    user_project(tmp_path)
    completed = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--dataset', 'fake', '--fake_size',
                                '100', '--batch_size', '100', '--num_epochs', '1', '--network', 'mlp', '--device',
                                'cpu', '--path', str(tmp_path / 'out')], cwd=tmp_path, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert 'done in' in completed.stdout


def test_the_package_installs_as_one_top_level_name_and_works_beside_a_users_modules(tmp_path):
    """pip builds a wheel of the package (from a copy of the repository, so the checkout stays clean); installed into
    a folder of its own, its public API imports and works from a user's project folder, away from the repository."""
    source = tmp_path / 'source'
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns('.venv', '.git', 'training', 'experiments', 'tests',
                                                                '__pycache__', 'build', '*.egg-info'))
    built = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                            str(tmp_path / 'wheel'), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel, = glob.glob(str(tmp_path / 'wheel' / '*.whl'))
    installed = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target',
                                str(tmp_path / 'site'), wheel], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    top_level = sorted(name for name in os.listdir(tmp_path / 'site') if not name.endswith('.dist-info'))
    assert top_level == [PACKAGE]
    project = user_project(tmp_path / 'project')  # created after the copy: no user module went into the wheel
    code = ('import revisiting_bn, torch\n'
            'from revisiting_bn import (ScaleBatchNorm1d, ScaleBatchNorm2d, ScaleBatchNorm3d, construct_network,\n'
            '    convert_to_scale_batch_norm, to_plain_batch_norm, adjust_weight_decay_and_learning_rate,\n'
            '    make_deterministic, evaluate)\n'
            f'assert revisiting_bn.__file__.startswith({str(tmp_path / "site")!r}), revisiting_bn.__file__\n'
            'make_deterministic(1)\n'
            'network = construct_network("mlp", 10, "fashionmnist", bn_weight=0.1, input_norm="bn")\n'
            'groups = adjust_weight_decay_and_learning_rate(network, 1e-4, 0.1, 100)\n'
            'network(torch.rand(4, 1, 28, 28))\n'
            'assert ScaleBatchNorm2d(3, bn_weight=0.1).weight[0].item() == torch.tensor(0.1).item()\n'
            'print(evaluate([2.0, 3.0, 5.0], [1.0, 1.0, 1.0]))')
    completed = run_python(code, project, str(tmp_path / 'site'))
    assert completed.returncode == 0, completed.stderr[-2000:]
    from scipy import stats
    assert float(completed.stdout) == stats.ttest_rel([2.0, 3.0, 5.0], [1.0, 1.0, 1.0], alternative='greater').pvalue


def test_the_tests_install_every_optional_extra_as_its_own_file_gives_it():
    """Each extra of pyproject.toml (requirements-<extra>.txt) is in requirements-test.txt line for line, so the tests
    run against the versions a user of the extra gets."""
    def requirements(name):
        with open(os.path.join(ROOT, name)) as f:
            return [line.strip() for line in f if line.strip() and not line.startswith('#')]
    pyproject = open(os.path.join(ROOT, 'pyproject.toml')).read()
    extras = re.findall(r'optional-dependencies\.(\w+) = \{ file = \["(requirements-\w+\.txt)"\] \}', pyproject)
    assert ('tracking', 'requirements-tracking.txt') in extras
    for extra, name in extras:
        if extra != 'test':
            assert set(requirements(name)) <= set(requirements('requirements-test.txt')), name
