"""Command lines: exit statuses, the parser every tool uses, and the one line that ends a program on any error.

Every tool here (train.py, sweep.py, report.py, t_test.py, bench.py) ends a known problem with
'prog: error: ...' in one line and a non-zero status, never a traceback: 2 for a usage error
(flags, a run that clashes with its files), 1 for a problem with files, data or training.
"""
import argparse
import contextlib
import errno
import os
import signal
import sys
import threading

USAGE, FAILURE = 2, 1  # a usage error (flags, a run that clashes with its files); a problem with files, data, training
TRACEBACK_VARIABLE = 'REVISITING_BN_TRACEBACK'  # set to 1 to see the traceback of an unexpected error

__all__ = ['USAGE', 'FAILURE', 'TRACEBACK_VARIABLE', 'STOP_SIGNALS', 'RunError', 'UsageError', 'Stopped',
           'stops_raise', 'stops_end_the_program', 'OneLineParser', 'describe', 'exit_on_error', 'plural', 'number_ranges', 'as_number']


class RunError(Exception):
    """A known problem, told in one line; ``status`` is the exit status (FAILURE unless it is a usage error)."""

    def __init__(self, message, status=FAILURE):
        super().__init__(message)
        self.status = status


class UsageError(RunError):
    """Flags that cannot work together, or a value a flag cannot take (exit status 2)."""

    def __init__(self, message):
        super().__init__(message, USAGE)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # a cluster's preemption, a user's Ctrl-C


class Stopped(BaseException):
    """A stop signal (SIGTERM, SIGINT) received at a moment with nothing to save. It derives from BaseException, as
    KeyboardInterrupt does, so that no ``except Exception`` around reading a file or building a network can mistake a
    stop for an error of its own."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.name, self.status = signum, signal.Signals(signum).name, 128 + signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def _install(handler):
    """``handler`` for SIGTERM and SIGINT (in the main thread, where Python runs handlers); the previous ones."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


@contextlib.contextmanager
def stops_raise():
    """Within the block, SIGTERM and SIGINT raise Stopped; the previous handlers come back afterwards."""
    previous = _install(_raise_stopped)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stops_end_the_program(prog, then):
    """From here on, a stop signal that nothing else answers ends the program with '{prog}: stopped by SIG... '
    + ``then()`` and status 128 + N, no traceback: for the moments before a program's own handling starts (while it
    imports PyTorch, say). Python runs this hook for an exception that reaches the top of the program."""
    _install(_raise_stopped)
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if not issubclass(kind, Stopped):
            return previous(kind, value, traceback)
        sys.stdout.flush()
        print(f'{prog}: stopped by {value.name} {then()}', file=sys.stderr, flush=True)
        os._exit(value.status)
    sys.excepthook = hook


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
    and a non-zero status (a usage error's 2, else 1); SystemExit, KeyboardInterrupt, Stopped and the exception types
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


def as_number(value):
    """``value`` (a number, or text such as a command-line value) as a float, or None where it is none."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def number_ranges(numbers):
    """Whole numbers as a reader writes them: 1-5, 7, 9-10."""
    numbers, parts = sorted(set(numbers)), []
    for number in numbers:
        if parts and number == parts[-1][1] + 1:
            parts[-1][1] = number
        else:
            parts.append([number, number])
    return ', '.join(f'{a}-{b}' if b > a else str(a) for a, b in parts)
