"""The docs: the file tables list every module with the sentence it opens with, the README's install and test
commands are the ones CI runs, its Python examples run beside a user's own modules, and every link resolves."""
import ast
import glob
import os
import re
import subprocess
import sys

from conftest import ROOT
from test_layout import user_project


def first_sentence(path):
    doc = ast.get_docstring(ast.parse(open(path).read()))
    assert doc, f'{path} has no docstring'
    return doc.splitlines()[0]


def test_every_module_opens_with_its_job_and_a_table_lists_it():
    """The root's files in the README's Files table, the package's modules in docs/code.md."""
    readme, code = (open(os.path.join(ROOT, page)).read() for page in ('README.md', os.path.join('docs', 'code.md')))
    for path in sorted(glob.glob(os.path.join(ROOT, '*.py'))):
        assert f'| `{os.path.basename(path)}` | {first_sentence(path)} |' in readme, path
    for path in sorted(glob.glob(os.path.join(ROOT, 'revisiting_bn', '*.py'))):
        if not path.endswith('__init__.py'):
            assert f'| `revisiting_bn/{os.path.basename(path)}` | {first_sentence(path)} |' in code, path
    for path in sorted(glob.glob(os.path.join(ROOT, 'benchmarks', '*.py'))):
        first_sentence(path)


def test_the_readme_installs_and_tests_exactly_as_ci_does():
    readme, ci = (open(os.path.join(ROOT, name)).read() for name in ('README.md', os.path.join('.ci', 'run')))
    section = readme[readme.index('## Tests'):]
    commands = re.findall(r'```bash\n(.*?)```', section, flags=re.S)[0].splitlines()
    install, test = (line.split('  #')[0].strip() for line in commands)
    assert install.startswith('pip install') and test == 'python -m pytest -q -n auto tests'
    assert [line.strip() for line in ci.splitlines() if line.startswith(('pip install', 'python -m pytest'))] == [
        install, test]


def test_the_readme_python_examples_run_beside_a_users_own_modules(tmp_path):
    """Every Python example of the README's "Python API" section, run from a project folder that has its own
    data.py, engine.py, utils.py ... (each raising if imported), with the repository on PYTHONPATH."""
    readme = open(os.path.join(ROOT, 'README.md')).read()
    section = readme[readme.index('## Python API'):readme.index('## Outputs')]
    blocks = re.findall(r'```python\n(.*?)```', section, flags=re.S)
    assert len(blocks) >= 3
    project = user_project(tmp_path / 'project')
    (project / 'examples.py').write_text('\n'.join(blocks))
    completed = subprocess.run([sys.executable, 'examples.py'], cwd=project, capture_output=True, text=True,
                               timeout=300, env={**os.environ, 'PYTHONPATH': ROOT})
    assert completed.returncode == 0, completed.stderr[-2000:]


def user_docs():
    return {path: open(path).read() for path in [os.path.join(ROOT, 'README.md'),
                                                 *sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md'))),
                                                 os.path.join(ROOT, 'experiments', 'README.md')]}


def test_the_readme_is_short_and_leads_with_the_workflow_and_the_api():
    """README.md stays at or under 250 lines, with the sweep -> report workflow and the Python API in its first 150;
    the reference lives in docs/, every page of which the README links."""
    lines = open(os.path.join(ROOT, 'README.md')).read().splitlines()
    assert len(lines) <= 250
    headings = {line: number for number, line in enumerate(lines, 1) if line.startswith('## ')}
    assert headings["## The paper's experiment: sweep → report"] < 150 and headings['## Python API'] < 150
    readme = '\n'.join(lines)
    for page in glob.glob(os.path.join(ROOT, 'docs', '*.md')):
        assert f'(docs/{os.path.basename(page)})' in readme, page


def test_user_docs_links_resolve_and_name_the_related_systems():
    """Every relative link of README.md and docs/ names a file that exists, and the related BN systems are named
    by what they are (never by the number of the document this project started from)."""
    for path, text in user_docs().items():
        for target in re.findall(r'\]\(([^)#]+)(?:#[^)]*)?\)', text):
            if '://' not in target:
                assert os.path.exists(os.path.join(os.path.dirname(path), target)), (path, target)
        assert not re.search(r'\bseed 00\d', text, flags=re.I), path


def test_every_figure_the_docs_name_is_there_under_that_name():
    """A figure experiments/README.md names in its text (`curves.png`) is one the committed experiments hold, and
    every image it shows is there (the links test above)."""
    figures = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, 'experiments', '**', '*.png'), recursive=True)}
    with open(os.path.join(ROOT, 'experiments', 'README.md')) as f:
        named = re.findall(r'`([\w.-]+\.png)`', f.read())
    assert named and set(named) <= figures, set(named) - figures


def test_user_docs_name_only_modules_and_scripts_that_exist():
    """Every `name.py` or `name.sh` a doc names is a file of the repository, by its path from the root or, for the
    package's modules, by its own name; the original code's MABN.py and a user's own utils.py aside. So no page
    sends a reader to a file that is gone."""
    existing = {os.path.relpath(p, ROOT) for pattern in ('*.py', '*.sh') for p in
                glob.glob(os.path.join(ROOT, '**', pattern), recursive=True) if '.venv' not in p}
    allowed = existing | {os.path.basename(p) for p in existing if p.startswith(('revisiting_bn', 'tests'))} | {
        'MABN.py', 'utils.py'}
    for path, text in user_docs().items():
        for name in re.findall(r'`(?:python |bash )?([\w/.-]+\.(?:py|sh))\b', text):
            assert name in allowed, (path, name)


def test_the_numbers_the_docs_take_from_committed_results_are_those_files_numbers():
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'doc_numbers.py')],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _suite_facts():
    """(tests, time) as README.md and docs/threads.md give the suite's count and time."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        readme = re.search(r'about (\d+ min \d+ s) for (\d+) tests', ' '.join(f.read().split()))
    with open(os.path.join(ROOT, 'docs', 'threads.md')) as f:
        threads = ' '.join(f.read().split())  # the words as read, wherever a line breaks
    counted = re.search(r'tests`: (\d+) passed, (\d+) CUDA tests skipped', threads)
    timed = re.search(r'took (\d+ min \d+ s) with nothing else running', threads)
    return readme, counted, timed


def test_the_readme_and_threads_md_give_the_suite_one_count_and_one_time(request):
    readme, counted, timed = _suite_facts()
    assert readme and counted and timed, 'README.md or docs/threads.md no longer states the suite in the checked words'
    tests = int(counted.group(1)) + int(counted.group(2))
    assert (readme.group(1), int(readme.group(2))) == (timed.group(1), tests)
    options = request.config.option
    whole_suite = [os.path.abspath(a) for a in request.config.args] == [os.path.join(ROOT, 'tests')] and \
        not options.keyword and not options.markexpr and not getattr(options, 'lf', False)
    if whole_suite:  # the count is the suite's own
        assert request.session.testscollected == tests
