"""The README: its file table lists every module with the sentence it opens with, its Python examples run, and
no module imports one that imports it back."""
import ast
import glob
import os

from conftest import ROOT


def test_every_module_opens_with_its_job_and_the_readme_lists_it():
    readme = open(os.path.join(ROOT, 'README.md')).read()
    for path in sorted(glob.glob(os.path.join(ROOT, '*.py'))):
        doc = ast.get_docstring(ast.parse(open(path).read()))
        assert doc, f'{path} has no docstring'
        assert f'| `{os.path.basename(path)}` | {doc.splitlines()[0]} |' in readme, os.path.basename(path)


def test_no_module_imports_another_that_imports_it_back():
    """The modules' imports (at the top or inside functions) form no cycle."""
    modules = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, '*.py'))}
    imports = {}
    for module in modules:
        tree = ast.parse(open(os.path.join(ROOT, module + '.py')).read())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        imports[module] = {name.split('.')[0] for name in names} & modules

    def reaches(start, target, seen=()):
        return any(d == target or (d not in seen and reaches(d, target, (*seen, d))) for d in imports[start])

    assert [m for m in sorted(modules) if reaches(m, m)] == []


def test_the_readme_python_examples_run_from_another_folder(tmp_path):
    """Every Python example of the README's "Python API" section, run from outside the repository with the
    repository on PYTHONPATH, as the README says."""
    import re
    import subprocess
    import sys
    readme = open(os.path.join(ROOT, 'README.md')).read()
    section = readme[readme.index('## Python API'):readme.index('## Files')]
    blocks = re.findall(r'```python\n(.*?)```', section, flags=re.S)
    assert len(blocks) >= 3
    script = tmp_path / 'examples.py'
    script.write_text('\n'.join(blocks))
    completed = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                               timeout=300, env={**os.environ, 'PYTHONPATH': ROOT})
    assert completed.returncode == 0, completed.stderr[-2000:]


def user_docs():
    return {path: open(path).read() for path in [os.path.join(ROOT, 'README.md'),
                                                 *sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))]}


def test_the_readme_is_short_and_leads_with_the_workflow_and_the_api():
    """README.md stays under 300 lines, with the sweep -> report workflow and the Python API in its first 150;
    the reference lives in docs/, every page of which the README links."""
    lines = open(os.path.join(ROOT, 'README.md')).read().splitlines()
    assert len(lines) <= 300
    headings = {line: number for number, line in enumerate(lines, 1) if line.startswith('## ')}
    assert headings["## The paper's experiment: sweep → report"] < 150 and headings['## Python API'] < 150
    readme = '\n'.join(lines)
    for page in glob.glob(os.path.join(ROOT, 'docs', '*.md')):
        assert f'(docs/{os.path.basename(page)})' in readme, page


def test_user_docs_links_resolve_and_name_the_related_systems():
    """Every relative link of README.md and docs/ names a file that exists, and the related BN systems are named
    by what they are (never by the number of the document this project started from)."""
    import re
    for path, text in user_docs().items():
        for target in re.findall(r'\]\(([^)#]+)(?:#[^)]*)?\)', text):
            if '://' not in target:
                assert os.path.exists(os.path.join(os.path.dirname(path), target)), (path, target)
        assert not re.search(r'\bseed 00\d', text, flags=re.I), path
