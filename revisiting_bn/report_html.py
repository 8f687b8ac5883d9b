"""report.html: the report as one self-contained page, its figures inside, with the provenance a reader needs.

The page holds what report.md holds (the same blocks, report_tables.section_blocks), each
figure inside it as a PNG data URI under its caption, and, per protocol, where the numbers come
from: the protocol's settings, the seeds, the test, the code version, the versions of torch,
torchvision and Python, the devices, when the runs were made and the commands that made them
(from each run's record, or, for runs recorded before records kept them, from its log). No
script, style sheet or font is fetched: it reads the same offline and in a year.
"""
import base64
import html
import json
import os
import re

from .cli import number_ranges
from .experiment import shown
from .runs import SWEEP_MANIFEST, run_files
from .t_test import CONFIDENCE

__all__ = ['write_html', 'provenance', 'log_sessions', 'devices']

STYLE = '''
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } figure { margin: 1.5em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; } code { background: #f4f4f4; padding: 0 0.2em; }
dl.provenance { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; font-size: 0.9em; }
dl.provenance dt { font-weight: bold; } dl.provenance dd { margin: 0; }
details { font-size: 0.85em; margin: 0.5em 0; }
'''


def _inline(text):
    """A text of the report as HTML: escaped, with its **bold** and `code`."""
    text = html.escape(str(text))
    text = re.sub(r'\*\*(.+?)\*\*', r'<strong>\1</strong>', text)
    return re.sub(r'`(.+?)`', r'<code>\1</code>', text)


def _figure(out, figure, caption):
    with open(os.path.join(out, figure), 'rb') as f:
        data = base64.b64encode(f.read()).decode('ascii')
    return (f'<figure><img alt="{html.escape(figure)}" src="data:image/png;base64,{data}">'
            f'<figcaption><strong>{html.escape(figure)}</strong>: {_inline(caption)}</figcaption></figure>')


def _block(block, out):
    kind, *content = block
    if kind == 'table':
        header, rows = content
        head = ''.join(f'<th>{_inline(cell)}</th>' for cell in header)
        body = ''.join('<tr>' + ''.join(f'<td>{_inline(cell)}</td>' for cell in row) + '</tr>' for row in rows)
        return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    if kind == 'ul':
        return '<ul>' + ''.join(f'<li>{_inline(item)}</li>' for item in content[0]) + '</ul>'
    if kind == 'figures':
        return ''.join(_figure(out, figure, caption) for figure, caption in content[0])
    if kind == 'h2':
        return f'<h2>{_inline(content[0])}</h2>'
    return f'<p>{_inline(content[0])}</p>'


def log_sessions(results_file, name):
    """[(date, command)] of the sessions in a run's log ('=== date [(slurm ...)] command' lines), oldest first."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(results_file)))
    try:
        with open(run_files(root, name)['log'], errors='replace') as f:
            lines = [line for line in f if line.startswith('=== ')]
    except OSError:
        return []
    sessions = []
    for line in lines:
        parts = line[4:].strip().split(' ', 2)
        if len(parts) == 3:
            sessions.append((f'{parts[0]} {parts[1]}', re.sub(r'^\(slurm [^)]*\) ', '', parts[2])))
    return sessions


def _when_and_how(run):
    """(started, last written, command, where it was read) of one run: its record, or its log."""
    record = run['record']
    if record.get('started_at'):
        return record['started_at'], record.get('updated_at', ''), record.get('command', ''), 'record'
    sessions = log_sessions(run['file'], record['config']['name'])
    if sessions:
        return sessions[0][0], sessions[-1][0], sessions[0][1], 'log'
    return '', '', '', 'none'


def _distinct(values):
    values = [str(v) for v in dict.fromkeys(v for v in values if v not in (None, ''))]
    return ', '.join(values) or 'not recorded'


def devices(records):
    """Where the runs of ``records`` trained, each device kind once: 'cpu (its model, its instruction set), 1 thread' as
    the records name them (records made before the CPU fields: 'model not recorded'), or a CUDA device's name."""
    return _distinct(_device(r) for r in records)


def _device(record):
    if record.get('device', 'cpu').startswith('cuda'):
        return f"{record['device']} ({record.get('device_name')})"
    about = [record.get('cpu_model') or 'model not recorded', record.get('cpu_capability')]
    threads = record.get('cpu_threads')
    return f"cpu ({', '.join(filter(None, about))})" + (f', {threads} thread{"s" if threads != 1 else ""}'
                                                       if threads else '')


def _seeds(groups):
    return '; '.join(f'{label}: {number_ranges(seeds)}' for label, seeds in groups.items())


def provenance(table):
    """[(what, HTML)] of one table: where its numbers come from."""
    runs = [run for seeds in table['groups'].values() for run in seeds.values()]
    records = [run['record'] for run in runs]
    made = [_when_and_how(run) for run in runs]
    starts, ends = [m[0] for m in made if m[0]], [m[1] or m[0] for m in made if m[0]]
    sources = {m[3] for m in made}
    when = f'{min(starts)} to {max(ends)}' if starts else 'not recorded'
    when += ' (from the runs\' logs: the last session\'s start)' if 'log' in sources else ''
    settings = ', '.join(f'{name} {shown(value)}' for name, value in table['key'])
    family = len(table['comparisons'])
    test = (f'one-sided paired t-test on the per-seed differences (configuration > baseline), significant at p <= 0.05'
            f'{f", Holm-adjusted over {family} comparisons" if family > 1 else ""}; beside it the mean difference with '
            f'its {CONFIDENCE:.0%} t-interval, d_z, Wilcoxon\'s signed-rank test and the two-sided t-test')
    commands = ''.join(f'<li><code>{html.escape(m[2])}</code></li>' for m in made if m[2])
    facts = [('Protocol', html.escape(settings)), ('Seeds', html.escape(_seeds(table['groups']))),
             ('Test', html.escape(test)),
             ('Code version', html.escape(_distinct(r.get('code_version') for r in records))),
             ('torch', html.escape(_distinct(r.get('torch_version') for r in records))),
             ('torchvision', html.escape(_distinct(r.get('torchvision_version') for r in records))),
             ('Python', html.escape(_distinct(r.get('python_version') for r in records))),
             ('Devices', html.escape(devices(records))), ('When', html.escape(when))]
    facts += _sweep_facts(runs)
    facts.append(('Commands', f'<details><summary>the train.py command of each of the {len(runs)} runs</summary>'
                              f'<ul>{commands or "<li>not recorded</li>"}</ul></details>'))
    return facts


def _sweep_facts(runs):
    homes = sorted({run['sweep'] for run in runs if run.get('sweep')})
    facts = []
    for home in homes:
        try:
            with open(os.path.join(home, SWEEP_MANIFEST)) as f:
                commands = [entry['command'] for entry in json.load(f).get('commands', [])]
        except (OSError, ValueError, KeyError, TypeError):
            commands = []
        listed = ''.join(f'<li><code>{html.escape(command)}</code></li>' for command in commands)
        facts.append(('Sweep', f'{html.escape(os.path.basename(home))} ({html.escape(home)})'
                               + (f'<ul>{listed}</ul>' if listed else '')))
    return facts


def _title(tables):
    return 'Report: ' + '; '.join(table['line'] for table in tables)


def write_html(path, tables, intro, sections, baseline, out):
    """report.html: the title naming the protocols, the intro, then each table's section with its provenance, then the
    sections across tables."""
    parts = [f'<h1>{html.escape(_title(tables))}</h1>'] + [_block(block, out) for block in intro]
    for index, (heading, blocks) in enumerate(sections):  # a table's section each, then any across them
        if heading:
            parts.append(f'<h2>{_inline(heading)}</h2>')
        if index < len(tables):
            facts = ''.join(f'<dt>{html.escape(what)}</dt><dd>{value}</dd>' for what, value in provenance(tables[index]))
            parts.append(f'<dl class="provenance">{facts}</dl>')
        parts += [_block(block, out) for block in blocks]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(_title(tables))}'
            f'</title><style>{STYLE}</style></head><body>\n' + '\n'.join(parts) + '\n</body></html>\n')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(page)
