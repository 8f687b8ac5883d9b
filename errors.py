"""Exit statuses, the one line that ends a run, a sweep or a report on any error, and counts in words."""
import contextlib
import errno
import os
import sys

USAGE, FAILURE = 2, 1  # a usage error (flags, a run that clashes with its files); a problem with files, data, training
TRACEBACK_VARIABLE = 'REVISITING_BN_TRACEBACK'  # set to 1 to see the traceback of an unexpected error

__all__ = ['USAGE', 'FAILURE', 'TRACEBACK_VARIABLE', 'RunError', 'describe', 'exit_on_error', 'plural']


class RunError(Exception):
    """A known problem, told in one line; ``status`` is the exit status (FAILURE unless it is a usage error)."""

    def __init__(self, message, status=FAILURE):
        super().__init__(message)
        self.status = status


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
