"""A run's name on disk: where its files go, and whether it starts, resumes or is already finished.

With --path P, --dataset D and --name N:
  P/D/images/              the dataset files (or --data_dir)
  P/D/networks/N-best.pt   state_dict of the best-validation epoch
  P/D/networks/N-last.pt   checkpoint to resume from (see checkpoint.py)
  P/D/results/N.txt, .json the results (see results.py)
"""
import os

from checkpoint import CheckpointError, load_checkpoint
from errors import USAGE
from results import is_finished, read_record
from train_args import experiment_settings, setting_differences

__all__ = ['output_paths', 'check_writable', 'find_start']


def output_paths(path, dataset, name, data_dir=None):
    root = os.path.join(path, dataset)
    return {
        'images': data_dir or os.path.join(root, 'images'),
        'networks': os.path.join(root, 'networks'),
        'results': os.path.join(root, 'results'),
        'weights': os.path.join(root, 'networks', f'{name}-best.pt'),
        'checkpoint': os.path.join(root, 'networks', f'{name}-last.pt'),
        'txt': os.path.join(root, 'results', f'{name}.txt'),
        'json': os.path.join(root, 'results', f'{name}.json'),
    }


def check_writable(folder):
    """A one-line reason why ``folder`` could not be created or written, or None. Creates nothing."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f'cannot create {folder}: {existing} is a file, not a folder'
    if not os.access(existing, os.W_OK | os.X_OK):
        return f'cannot write to {folder}: {existing} is not writable'
    return None


def find_start(args, paths):
    """How a run starts: ('new', None), ('resume', checkpoint) or ('finished', results record).

    Without --resume, existing results or a checkpoint are never overwritten unless
    --overwrite says so. With --resume, the checkpoint must come from the same
    experiment (train_args.experiment_settings) and, unless --change_num_epochs, the same
    number of epochs; a finished run is reported, not retrained.
    """
    record = read_record(paths['json'])
    has_results = os.path.exists(paths['json'])
    has_checkpoint = os.path.exists(paths['checkpoint'])
    if not args.resume:
        if args.overwrite or not (has_results or has_checkpoint):
            return 'new', None
        state = 'finished' if is_finished(record) else 'unfinished'
        raise CheckpointError(f'{args.name} already has {state} results in {paths["results"]}: add --resume to '
                              f'continue it, or --overwrite to train it again from scratch', status=USAGE)
    if not has_checkpoint:
        if is_finished(record):
            return 'finished', record
        if has_results:
            raise CheckpointError(f'cannot resume {args.name}: it has results but no checkpoint '
                                  f'({paths["checkpoint"]}); use --overwrite instead to train it again',
                                  status=USAGE)
        return 'new', None
    checkpoint = load_checkpoint(paths['checkpoint'])
    # Every experiment setting must match; num_epochs only changes the schedule's end, so it is checked apart.
    names = [name for name in experiment_settings() if name != 'num_epochs']
    differences = setting_differences(checkpoint['config'], vars(args), names)
    if differences:
        raise CheckpointError(f'cannot resume {args.name}: its checkpoint was made with other settings '
                              f'({"; ".join(differences)}); use the original flags or another --name', status=USAGE)
    saved_epochs, completed = checkpoint['config']['num_epochs'], checkpoint['completed_epochs']
    if args.num_epochs != saved_epochs and not args.change_num_epochs:
        raise CheckpointError(f'cannot resume {args.name}: --num_epochs {args.num_epochs} differs from the '
                              f'checkpoint\'s {saved_epochs}, which changes the cosine schedule; add '
                              f'--change_num_epochs to accept that', status=USAGE)
    if args.num_epochs < completed:
        raise CheckpointError(f'cannot resume {args.name} with --num_epochs {args.num_epochs}: '
                              f'{completed} epochs are already done', status=USAGE)
    if completed >= args.num_epochs:
        return 'finished', checkpoint['record']
    return 'resume', checkpoint
