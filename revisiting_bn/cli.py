"""Command lines: exit statuses, the parser every tool uses, and the one line that ends a program on any error.

Every tool here (train.py, sweep.py, report.py, t_test.py, bench.py) ends a known problem with
'prog: error: ...' in one line and a non-zero status, never a traceback: 2 for a usage error
(flags, a run that clashes with its files), 1 for a problem with files, data or training.
"""
import argparse
import contextlib
import errno
import os
import sys

USAGE, FAILURE = 2, 1  # a usage error (flags, a run that clashes with its files); a problem with files, data, training
TRACEBACK_VARIABLE = 'REVISITING_BN_TRACEBACK'  # set to 1 to see the traceback of an unexpected error

__all__ = ['USAGE', 'FAILURE', 'TRACEBACK_VARIABLE', 'RunError', 'UsageError', 'OneLineParser', 'describe',
           'exit_on_error', 'plural']


class RunError(Exception):
    """A known problem, told in one line; ``status`` is the exit status (FAILURE unless it is a usage error)."""

    def __init__(self, message, status=FAILURE):
        super().__init__(message)
        self.status = status


class UsageError(RunError):
    """Flags that cannot work together, or a value a flag cannot take (exit status 2)."""

    def __init__(self, message):
        super().__init__(message, USAGE)


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows a flag's default where it has one worth showing (not None, '', or an off switch)."""

    def _get_help_string(self, action):
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if switch or action.default in (None, '', argparse.SUPPRESS) or isinstance(action.default, list):
            return action.help  # a switch's help says what each form does
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ('prog: error: ...', exit 2) instead of the whole usage block
    (or, with ``raise_errors``, a UsageError for the caller); flags must be written in full (no
    abbreviations) and --help shows the defaults."""

    def __init__(self, *args, raise_errors=False, **kwargs):
        super().__init__(*args, allow_abbrev=False, formatter_class=DefaultsHelp, **kwargs)
        self.raise_errors = raise_errors

    def error(self, message):
        if self.raise_errors:
            raise UsageError(message)
        self.exit(USAGE, f'{self.prog}: error: {message}\n')


def _first_line(error):
    return next((line.strip() for line in str(error).splitlines() if line.strip()), '')


def describe(error):
    """``error`` in one line: a known problem as it is told, a file problem with its file, anything else with its
    type (unexpected: the traceback is one environment variable away)."""
    if isinstance(error, RunError):
        return str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        folder, name = os.path.split(os.path.abspath(error.filename)) if error.filename else ('?', '?')
        return f'no space left on device in {folder} (writing {name})'
    if isinstance(error, OSError) and error.strerror:
        return f'{error.strerror}: {error.filename}' if error.filename else error.strerror
    if isinstance(error, MemoryError) or "can't allocate memory" in str(error) or 'out of memory' in str(error):
        return f'not enough memory ({type(error).__name__}: {_first_line(error)[:300]})'
    return (f'{type(error).__name__}: {_first_line(error)[:300]} (unexpected; {TRACEBACK_VARIABLE}=1 shows the '
            f'traceback)')


@contextlib.contextmanager
def exit_on_error(prog, passing=()):
    """Around a program's main: any exception it lets out ends the program with 'prog: error: ...' in one line
    and a non-zero status (a usage error's 2, else 1); SystemExit, KeyboardInterrupt and the exception types
    ``passing`` (that the program answers itself) pass through."""
    try:
        yield
    except passing:
        raise
    except Exception as error:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        print(f'{prog}: error: {describe(error)}', file=sys.stderr)
        sys.exit(error.status if isinstance(error, RunError) else FAILURE)


def plural(count, noun):
    return f'{count} {noun}{"" if count == 1 else "s"}'
