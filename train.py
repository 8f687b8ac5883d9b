"""Train one network with the paper's protocol: set-up, the epoch loop, and what each epoch saves.

    python train.py --dataset cifar10 --bn_weight 0.1 --c 100 --input_norm bn --seed 1

Protocol (Davis & Frank, ECCV 2022): a stratified 10% of the training set is held
out for validation (always with seed 0); the trial seed fixes the initial
weights, data order and flips; SGD with momentum and cosine annealing per epoch;
random horizontal flips are the only augmentation; the weights with the best
validation accuracy are kept, and the test accuracy at that epoch is reported.
"""
import argparse
import contextlib
import math
import os
import shlex
import signal
import sys
import time
import warnings
from dataclasses import dataclass

from revisiting_bn.cli import Stopped, stops_end_the_program, stops_raise


def resume_command(argv, threads=None):
    """The command that continues this run from any folder: this one's folder (relative paths stay right), the
    thread count (it changes the CPU's rounding), this Python and train.py by their full paths."""
    flags = [flag for flag in argv if flag != '--overwrite']
    if threads and not any(flag == '--threads' or flag.startswith('--threads=') for flag in flags):
        flags += ['--threads', str(threads)]
    command = [sys.executable, os.path.abspath(__file__), *flags, *([] if '--resume' in flags else ['--resume'])]
    return f'cd {shlex.quote(os.getcwd())} && {shlex.join(command)}'


if __name__ == '__main__':  # a Ctrl-C or SIGTERM while the imports below load is a stop too, said as such
    stops_end_the_program('train.py', lambda: f'while it started, before anything was trained. Resume with: '
                                              f'{resume_command(sys.argv[1:])}')

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from revisiting_bn.batch_norm import layer_seeing_one_value  # noqa: E402
from revisiting_bn.checkpoint import CHECKPOINT_FORMAT, restore_checkpoint  # noqa: E402
from revisiting_bn.cli import USAGE, RunError, exit_on_error, plural  # noqa: E402
from revisiting_bn.cpu_threads import CpuRun, oversubscription, set_threads  # noqa: E402
from revisiting_bn.data import (PAPER_CIFAR10_MEAN, PAPER_CIFAR10_STD, ImageBatches, channel_mean_std,  # noqa: E402
                                data_folder, load_dataset, split_train_validation)
from revisiting_bn.distributed import setup  # noqa: E402
from revisiting_bn.engine import Epoch, evaluate_network, train_one_epoch  # noqa: E402
from revisiting_bn.experiment import as_given, differing_settings, experiment_settings, replaced, run_config  # noqa
from revisiting_bn.fast_path import build_step  # noqa: E402
from revisiting_bn.flags import canonical_seed, given_settings, parse_args  # noqa: E402
from revisiting_bn.lifecycle import RunOutputs, RunStopped, StopOnSignal, find_start, saved_so_far  # noqa: E402
from revisiting_bn.networks import construct_network, train_only_norms  # noqa: E402
from revisiting_bn.norm_statistics import MEASURED_IMAGES, NormStatistics, signal_warnings  # noqa: E402
from revisiting_bn.results import (add_epoch, add_norm_statistics, add_signal_warning, interrupted,  # noqa: E402
                                   new_record, outcome, read_record, resumed_record)
from revisiting_bn.runs import (WRITTEN, RunLock, check_writable, files_of_weights, output_paths,  # noqa: E402
                                sweep_home_of)
from revisiting_bn.seeds import make_deterministic  # noqa: E402
from revisiting_bn.tracking import make_trackers  # noqa: E402
from revisiting_bn.weight_decay_and_learning_rate import build_optimizer  # noqa: E402

# With fp16 every SGD step goes through fast_path.sgd_step, which the scheduler cannot see.
warnings.filterwarnings('ignore', message=r'Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`')


@dataclass
class Data:
    """The paper's three sets on the training device, and what the results record says about them."""
    train: ImageBatches
    val: ImageBatches
    test: ImageBatches
    info: object  # data.DatasetInfo: channels, image size, number of classes
    is_fake: bool
    mean: tuple = None  # the --input_norm dataset statistics, if used
    std: tuple = None
    classes: tuple = None  # the class names of a folder dataset

    def facts(self):
        """What the results record keeps of the data: its shape as the network saw it (the resolved image size
        included) and, for a folder of images, its classes in label order."""
        return {'channels': self.info.channels, 'image_size': self.info.image_size,
                'num_classes': self.info.num_classes, 'classes': None if self.classes is None else list(self.classes)}


@dataclass
class Model:
    """What trains, and what a checkpoint saves: the network, its optimizer and schedule, the step that trains it
    and the position within the current epoch."""
    network: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    step: object  # engine.Step, or a fast_path step around it
    epoch: Epoch
    uses_graph: bool


def prepare_data(args, images_dir, device, log=print):
    """Load the dataset, hold out the paper's validation split, and place all three sets on the device."""
    images_dir, note = data_folder(args.dataset, images_dir, given=bool(args.data_dir))
    if note:
        log(note)
    data = load_dataset(args.dataset, images_dir, fake_size=args.fake_size, image_size=args.image_size,
                        cache_dir=args.cache_dir, device_type=device.type, log=log)
    train_index, validation_index = split_train_validation(data.train_labels.numpy(), args.split_seed)
    train_images = data.train_images[train_index]
    mean = std = None
    if args.input_norm == 'dataset':
        if args.dataset == 'cifar10':
            mean, std = PAPER_CIFAR10_MEAN, PAPER_CIFAR10_STD
        else:
            mean, std = channel_mean_std(train_images)
    make = lambda images, labels: ImageBatches(images, labels, device, mean, std)  # noqa: E731
    return Data(make(train_images, data.train_labels[train_index]),
                make(data.train_images[validation_index], data.train_labels[validation_index]),
                make(data.test_images, data.test_labels), data.info, data.is_fake, mean, std, data.classes)


def graph_decision(args, world):
    """Whether steps replay a CUDA graph, and if not, why: decided here once."""
    if not args.device.startswith('cuda'):
        return False, 'not a CUDA device'
    if args.no_cuda_graph:
        return False, '--no_cuda_graph'
    if world.enabled:
        return False, 'torchrun (the gradient all-reduce runs eagerly)'
    return True, None


def seeded_network(args, data, world):
    """The network of ``args`` for ``data``, its initial weights drawn from the trial seed."""
    make_deterministic(args.seed)
    options = {'affine': args.bn_affine, 'track_running_stats': args.bn_running_stats,
               'B': args.batch_size // world.world_size, 'real_B': args.mabn_real_batch}  # each kind takes its own
    try:
        return construct_network(args.network, data.info.num_classes, data.info, args.bn_weight, args.input_norm,
                                 args.norm, options)
    except ValueError as error:  # a torchvision network without BN, or too big a stride for these images
        raise RunError(str(error), USAGE) from None


def build_model(args, data, device, world):
    """The seeded network, its optimizer and schedule, and the step that trains it."""
    network = seeded_network(args, data, world).to(device)
    if args.train_only_bn:
        train_only_norms(network)
    if args.sync_bn and world.enabled:
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    if args.channels_last:
        network = network.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(network, args.learning_rate, args.momentum, args.weight_decay, args.c,
                                           args.scheduler, args.num_epochs)
    use_graph, eager_because = graph_decision(args, world)
    step = build_step(world.wrap(network, device), optimizer, nn.CrossEntropyLoss(), device, args.precision,
                      args.channels_last, use_graph, eager_because)
    epoch = Epoch(data.train.num_batches(args.batch_size, min_batch=world.world_size), device)
    return Model(network, optimizer, scheduler, step, epoch, use_graph)


def check_batches(args, data, model, world):
    """Refuse, before any training, a batch size that would give a BN layer one value per channel in some step:
    batch norm cannot train on that (the original code fails there, after an epoch's work)."""
    n, size, processes = len(data.train), args.batch_size, world.world_size
    if data.train.smallest_share(size, processes) > 1:
        return
    layer = layer_seeing_one_value(model.network, data.train.first())
    if layer is None:  # every BN layer sees several values per channel (an image's positions) even for one image
        return
    works = [b for b in range(max(2, size - 64), size + 65)
             if b % processes == 0 and data.train.smallest_share(b, processes) > 1]
    nearby = sorted(sorted(works, key=lambda b: abs(b - size))[:2])
    where = ('every training batch would hold 1 image' if size // processes == 1 else
             f'the last training batch would hold {n % size} image{"s" if n % size > 1 else ""} ({n} = {size} x '
             f'{n // size} + {n % size}){f", 1 for some of the {processes} processes" if processes > 1 else ""}')
    kind = type(dict(model.network.named_modules())[layer]).__name__
    raise RunError(f'--batch_size {size}: {where}, and batch norm cannot train on one value per channel ({kind} '
                   f'{layer!r}); batch sizes near {size} that work: {", ".join(map(str, nearby))}', USAGE)


def check_distributed(args, world):
    if world.enabled and args.batch_size % world.world_size:
        raise RunError(f'--batch_size {args.batch_size} (the global batch) must be divisible by the '
                       f'{world.world_size} torchrun processes', USAGE)
    if args.sync_bn and not args.device.startswith('cuda'):
        raise RunError('--sync_bn needs CUDA (torch.nn.SyncBatchNorm runs on GPUs only)', USAGE)


@contextlib.contextmanager
def locked(paths, world, device_name):
    """The run's lock (runs.RunLock), held by rank 0 for the whole run, after checking that its folders can be
    written; under torchrun every process learns whether rank 0 got it. Released on every way out."""
    lock, refusal = None, None
    if world.is_main:
        try:
            for folder in (paths['networks'], paths['results']):
                problem = check_writable(folder)
                if problem:
                    raise RunError(problem)
            lock = RunLock(paths).acquire()
        except RunError as error:
            refusal = error
    if world.any(refusal is not None, torch.device(device_name)):
        raise refusal or RunError('the torchrun job\'s rank 0 could not start this run', USAGE)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def remove_old_files(args, paths, world):
    """With --overwrite, the run's old files go, once its data and network are ready."""
    for key in WRITTEN if args.overwrite and world.is_main else ():
        if os.path.exists(paths[key]):
            os.remove(paths[key])


def start_record(args, argv, data, device, world, model, start):
    """The results record of this session, and its first epoch: a new run's (with the command that started it), or
    the resumed checkpoint's."""
    config = {**run_config(args), 'cuda_graph': model.uses_graph}
    if start.kind == 'resume':
        first_epoch = start.checkpoint['completed_epochs'] + 1
        return resumed_record(start.checkpoint['record'], config, world.world_size, first_epoch), first_epoch
    return new_record(config, device, command=shlex.join([sys.executable, os.path.abspath(__file__), *argv]),
                      fake_data=data.is_fake, data=data.facts(), input_mean=data.mean,
                      input_std=data.std,
                      train_size=len(data.train), val_size=len(data.val), test_size=len(data.test),
                      world_size=world.world_size), 1


def check_cpu_share(args, cpu_run, start, warn):
    """Before a CPU run trains, say what would make it slow, or unlike an uninterrupted run: cores that other
    processes keep busy, or a thread count other than the one its epochs so far ran with."""
    if cpu_run is None:
        return
    earlier = start.checkpoint['record'].get('cpu_threads') if start.kind == 'resume' else None
    if earlier not in (None, args.threads):
        warn(f'WARNING: resuming with --threads {args.threads}, but the epochs so far ran with {earlier}: the CPU '
             f'rounds differently with another thread count, so this run will not be bit-identical to an '
             f'uninterrupted one (--threads {earlier} keeps it so)')
    warning = oversubscription(args.threads, cpu_run.others)
    if warning:
        warn(warning)


def epoch_line(row, num_epochs, improved):
    return (f"epoch {row['epoch']:>3}/{num_epochs}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}"
            f"  val_acc {row['val_accuracy']:6.2f}%  test_acc {row['test_accuracy']:6.2f}%  "
            f"lr {row['learning_rate']:.3g}  {row['epoch_time_s']:.1f}s{'  *best' if improved else ''}")


def train_and_evaluate(args, epoch, model, data, world, stop, device):
    """One epoch of the protocol: SGD over the training set, the schedule's step, then validation and test.
    Returns the epoch's metrics, or None when a signal stopped it mid-epoch."""
    started, learning_rate = time.time(), model.optimizer.param_groups[0]['lr']
    group_rates = {group.get('name', 'all'): group['lr'] for group in model.optimizer.param_groups}
    steps = model.epoch.steps
    # Processes must agree on where to stop, so under torchrun a signal takes effect at the epoch's end.
    if train_one_epoch(model.step, model.epoch, data.train, args.batch_size, None if world.enabled else stop,
                       f'epoch {epoch}/{args.num_epochs}', world) < steps:
        return None
    bad_step = model.epoch.first_nonfinite_step()
    bad_step = world.min(steps if bad_step is None else bad_step, device)
    if bad_step < steps:
        raise RunError(f'non-finite training loss at epoch {epoch}, step {bad_step + 1}/{steps}; '
                       f'stopped, {saved_so_far(epoch - 1)}')
    if model.scheduler is not None:
        model.scheduler.step()
    world.broadcast_buffers(model.network)
    val, test = (evaluate_network(model.network, part, args.batch_size, args.precision, args.channels_last, world)
                 for part in (data.val, data.test))
    if not math.isfinite(val['loss']):
        raise RunError(f'non-finite validation loss after epoch {epoch}; stopped, {saved_so_far(epoch - 1)}')
    return {'epoch': epoch, 'train_loss': model.epoch.mean_loss(world), 'val_loss': val['loss'],
            'val_accuracy': val['accuracy'], 'test_accuracy': test['accuracy'], 'learning_rate': learning_rate,
            'group_learning_rates': group_rates, 'epoch_time_s': time.time() - started}


def stopped(stop, where, paths, argv, threads):
    """The RunStopped that ends a run stopped by the signal ``stop`` (a signal number or cli.Stopped) ``where``."""
    name = stop.name if isinstance(stop, Stopped) else Stopped(stop).name
    return RunStopped(f'stopped by {name} {where}; checkpoint {paths["checkpoint"]}. Resume with: '
                      f'{resume_command(argv, threads)}', 128 + (stop.signum if isinstance(stop, Stopped) else stop))


def announce(args, data, device, world, model, start, paths, log):
    if data.is_fake:
        log('NOTE: --dataset fake is random noise with random labels: its accuracies are meaningless')
    if start.kind == 'resume':
        log(f'resuming {args.name} from {paths["checkpoint"]} at epoch {start.checkpoint["completed_epochs"] + 1}, '
            f'step {model.epoch.steps_done}')
    log(f'{args.name}: {args.network} on {args.dataset} ({len(data.train)} train, {len(data.val)} val, '
        f'{len(data.test)} test) for {plural(args.num_epochs, "epoch")} on {device}'
        f'{f" x {world.world_size} processes" if world.enabled else ""}', flush=True)


def observe(record, norm_stats, epoch, log):
    """The per-layer statistics of this moment into the record, and a warning (said once, kept in the record) when
    they show the signal vanishing or exploding."""
    measured = norm_stats.measured(epoch)
    add_norm_statistics(record, measured)
    for warning in signal_warnings(measured['about']['layers'], measured['epoch']):
        if add_signal_warning(record, warning):
            log(warning['message'], file=sys.stderr, flush=True)


def prepare(args, argv, world, device_name, paths, start, log):
    """Everything the epochs need, made before the first one: the data, the seeded network and its optimizer (restored
    from the checkpoint when resuming), the per-layer statistics, and the results record."""
    device = torch.device(device_name)
    data = prepare_data(args, paths['images'], device, log)
    model = build_model(args, data, device, world)
    for line in getattr(model.network, 'notes', []):
        log(line)
    check_batches(args, data, model, world)
    # Taken before a checkpoint is restored: the layers' initial gamma and beta.
    norm_stats = None if args.no_norm_statistics or not world.is_main else \
        NormStatistics(model.network, data.val.first(min(MEASURED_IMAGES, len(data.val))))
    if start.kind == 'resume':
        restore_checkpoint(start.checkpoint, model, args.num_epochs)
    record, first_epoch = start_record(args, argv, data, device, world, model, start)
    if norm_stats and start.kind == 'new':
        observe(record, norm_stats, 0, log)
    remove_old_files(args, paths, world)
    announce(args, data, device, world, model, start, paths, log)
    return device, data, model, norm_stats, record, first_epoch


def tracked(args, paths, record, start):
    """The trackers asked for (--tensorboard, --mlflow), told where a resumed run left off; MLflow's experiment is the
    run's sweep (the home of its --path), else its dataset."""
    if not args.tensorboard and args.mlflow is None:
        return []
    home = sweep_home_of(paths['json'])
    return make_trackers(args, paths, record, start.checkpoint, os.path.basename(home) if home else args.dataset)


def train(args, argv, world, device_name, paths, cpu_run=None):
    """The paper's protocol for one run (on every torchrun process; only rank 0 writes and prints). ``cpu_run``
    (cpu_threads.CpuRun) tells a CPU run what else keeps its cores busy."""
    log = print if world.is_main else (lambda *a, **k: None)
    started = time.time()
    start = find_start(args, paths)
    if start.kind == 'finished':
        RunOutputs(paths, None, world.is_main).already_finished(start.record)
        log(f"{args.name} already finished {plural(len(start.record['epochs']), 'epoch')} ({outcome(start.record)}): "
            f"nothing to do")
        return start.record
    try:
        device, data, model, norm_stats, record, first_epoch = prepare(args, argv, world, device_name, paths, start,
                                                                       log)
    except Stopped as stop:
        raise stopped(stop, 'while starting, before this session trained a step; its files are as they were',
                      paths, argv, args.threads) from None
    check_cpu_share(args, cpu_run, start, lambda line: log(line, file=sys.stderr, flush=True))
    elapsed_before, epoch = record['wall_time_s'], first_epoch
    trackers = tracked(args, paths, record, start) if world.is_main else []
    try:
        with RunOutputs(paths, model, world.is_main, trackers, first_epoch - 1) as outputs, StopOnSignal() as stop:
            for epoch in range(first_epoch, args.num_epochs + 1):
                row = train_and_evaluate(args, epoch, model, data, world, stop, device)
                wall_time = elapsed_before + time.time() - started
                if row is None:  # stopped mid-epoch: the checkpoint keeps the position within it
                    outputs.save(interrupted(record, wall_time), epoch - 1)
                    raise stopped(stop.received, f'at epoch {epoch}, step {model.epoch.steps_done}/'
                                                 f'{model.epoch.steps}', paths, argv, args.threads)
                # The best weights are written before the results by this epoch's save.
                improved = add_epoch(record, row, epoch == args.num_epochs, wall_time, model.step.execution,
                                     paths['weights'])
                if norm_stats:
                    observe(record, norm_stats, epoch, log)
                outputs.save(record, epoch, best_weights=improved, announce=epoch_line(row, args.num_epochs, improved))
                if world.any(stop.received is not None, device) and epoch < args.num_epochs:
                    raise stopped(stop.received or signal.SIGTERM, f'after epoch {epoch}', paths, argv, args.threads)
    except Stopped as stop_now:  # a second signal: at once, the last saved epoch kept
        raise stopped(stop_now, f'at once (a second signal) in epoch {epoch}, {saved_so_far(epoch - 1)}', paths,
                      argv, args.threads) from None
    took = f'{time.time() - started:.0f} s'
    took += f" this session, {record['wall_time_s']:.0f} s in all" if elapsed_before else ''
    log(f"done in {took}: {outcome(record)}; weights {record['weights_file']}, results {paths['json']}")
    return record


def first_mismatch(expected, saved):
    """The first difference between the network's state_dict and saved weights, in words, or None."""
    for key, value in expected.items():
        if key not in saved:
            return f'it lacks {key}'
        if tuple(saved[key].shape) != tuple(value.shape):
            return f'{key} has shape {tuple(saved[key].shape)}, the network\'s {tuple(value.shape)}'
    extra = [key for key in saved if key not in expected]
    return f'it has {extra[0]}, which the network lacks' if extra else None


def with_recorded_settings(args, argv, log=print):
    """--evaluate: the settings of the run whose weights are evaluated, read from its results JSON where train.py
    wrote it (a flag given that contradicts the record is refused, naming it), so the weights are evaluated on the
    data and network they were trained with; the flags as given where there is no record. ``args`` are the flags as
    parsed, before they are checked and completed."""
    files = files_of_weights(args.evaluate)
    record = read_record(files['json']) if files else None
    if not record or not isinstance(record.get('config'), dict):
        log('--evaluate: no results JSON of these weights where train.py writes it; using the flags as given')
        return args
    recorded, given = record['config'], given_settings(argv)
    contradictions = [f"--{name} {getattr(args, name)!r} (the run's: {recorded.get(name)!r})"
                      for name in differing_settings([recorded, {**vars(args), 'seed': canonical_seed(args.seed)}])
                      if name in given]
    if contradictions:
        raise RunError(f"--evaluate {args.evaluate}: {'; '.join(contradictions)} "
                       f"{'contradicts' if len(contradictions) == 1 else 'contradict'} the run's record "
                       f"{files['json']}: leave them out to evaluate with the run's settings", USAGE)
    flags = as_given(recorded)  # the network is rebuilt from the flags as given (--bn_weight -1 too)
    settings = {name: flags[name] for name in experiment_settings() if name in flags}
    settings.update({name: recorded[name] for name in ('data_dir', 'cache_dir') if name in recorded and
                     name not in given})
    if settings.get('image_size') is None and recorded.get('dataset') == 'folder':
        settings['image_size'] = (record.get('data') or {}).get('image_size')  # resolved from the folder
    log(f"--evaluate: with the settings recorded in {files['json']} ({settings['dataset']}, {settings['network']}"
        f"{'' if settings.get('image_size') is None else ', image size ' + str(settings['image_size'])})")
    return argparse.Namespace(**{**vars(args), **settings, 'classes': (record.get('data') or {}).get('classes')})


def evaluate_saved(args, world, device_name, paths):
    """--evaluate: the validation and test loss and accuracy of saved weights, computed as training computes them
    (the same split, batches, precision and evaluation function)."""
    device = torch.device(device_name)
    data = prepare_data(args, paths['images'], device)
    classes = getattr(args, 'classes', None)
    if classes is not None and data.classes is not None and list(data.classes) != list(classes):
        raise RunError(f"--evaluate {args.evaluate}: the image folder's classes ({', '.join(data.classes)}) are not "
                       f"the run's ({', '.join(classes)})", USAGE)
    network = seeded_network(args, data, world).to(device)
    try:
        saved = torch.load(args.evaluate, map_location=device, weights_only=True)
    except Exception as error:
        raise RunError(f'--evaluate {args.evaluate}: cannot read it ({type(error).__name__}: '
                       f'{(str(error).splitlines() or [""])[0][:200]})') from None
    if isinstance(saved, dict) and saved.get('format') == CHECKPOINT_FORMAT:
        saved = saved['network']  # a -last.pt checkpoint
    mismatch = first_mismatch(network.state_dict(), saved) if isinstance(saved, dict) else 'it is not a state_dict'
    if mismatch:
        raise RunError(f'--evaluate {args.evaluate} does not fit --network {args.network} on this data: {mismatch}',
                       USAGE)
    network.load_state_dict(saved)
    val, test = (evaluate_network(network, part, args.batch_size, args.precision, args.channels_last, world)
                 for part in (data.val, data.test))
    print(f'{args.evaluate}: validation accuracy {val["accuracy"]:.2f}% (loss {val["loss"]:.4f}, {len(data.val)} '
          f'images), test accuracy {test["accuracy"]:.2f}% (loss {test["loss"]:.4f}, {len(data.test)} images)')
    return {'val': val, 'test': test}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv, adjust=lambda raw: with_recorded_settings(raw, argv) if raw.evaluate else raw)
    if args.seed == '0':
        print('NOTE: seed 0 is the seed of the validation split; the paper\'s trials use seeds 1..15')
    for line in [] if args.evaluate else replaced(args):
        print(line)
    world, device_name = setup(args.device)
    set_threads(args.threads)
    on_cpu = torch.device(device_name).type == 'cpu'
    done = False
    try:
        check_distributed(args, world)
        paths = output_paths(args.path, args.dataset, args.name, args.data_dir)
        if args.evaluate:
            result = evaluate_saved(args, world, device_name, paths)
        else:
            with locked(paths, world, device_name), CpuRun(args.threads) if on_cpu else contextlib.nullcontext() as run:
                result = train(args, argv, world, device_name, paths, run)
        done = True
        return result
    finally:
        world.close(together=done)


def run(argv=None):
    """Command-line entry: known problems end with a one-line message and a non-zero exit, no traceback; a stop
    signal at any moment ends with 'stopped by SIG...' and the command that resumes the run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with stops_raise(), exit_on_error('train.py', passing=(RunStopped,)):  # any other error: one line
            return main(argv)
    except Stopped as stop:  # before the run's lock and files (parsing, setting up) or after it ended
        evaluating = any(flag == '--evaluate' or flag.startswith('--evaluate=') for flag in argv)
        print(f'train.py: stopped by {stop.name} ' + ('before it evaluated anything' if evaluating else
              f'outside training (nothing of this session is unsaved). Resume with: {resume_command(argv)}'),
              file=sys.stderr)
        sys.exit(stop.status)
    except RunStopped as stop:
        print(f'train.py: {stop}', file=sys.stderr)
        sys.exit(stop.status)


if __name__ == '__main__':
    run()
