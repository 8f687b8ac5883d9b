"""Exit statuses, the one-line error that ends a run, a sweep or a report (non-zero status), and counts in words."""

USAGE, FAILURE = 2, 1  # a usage error (flags, a run that clashes with its files); a problem with files, data, training

__all__ = ['USAGE', 'FAILURE', 'RunError', 'plural']


class RunError(Exception):
    """A known problem, told in one line; ``status`` is the exit status (FAILURE unless it is a usage error)."""

    def __init__(self, message, status=FAILURE):
        super().__init__(message)
        self.status = status


def plural(count, noun):
    return f'{count} {noun}{"" if count == 1 else "s"}'
