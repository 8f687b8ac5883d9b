"""The README's file table: every module is listed, with the sentence it opens with."""
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
