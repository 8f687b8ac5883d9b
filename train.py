"""Train a ResNet with the paper's BN initialisation and BN-scale learning-rate reduction.

    python train.py --dataset cifar10 --bn_weight 0.1 --c 100 --input_norm bn --seed 1

Protocol (Davis & Frank, ECCV 2022): a stratified 10% of the training set is held
out for validation (always with seed 0); the trial seed fixes the initial
weights, data order and flips; SGD with momentum and cosine annealing per epoch;
random horizontal flips are the only augmentation; the weights with the best
validation accuracy are kept, and the test accuracy at that epoch is reported.
"""
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from checkpoint import (FAILURE, BackgroundWriter, CheckpointError, checkpoint_state, find_start,
                        restore_checkpoint, save_torch, write_text)
from distributed import Distributed, setup
from data import (PAPER_CIFAR10_MEAN, PAPER_CIFAR10_STD, DatasetError, ImageBatches, channel_mean_std,
                  load_dataset, split_train_validation)
from fast_path import TrainStep, autocast
from networks import construct_network
from results import check_writable, new_record, output_paths, results_text
from seeds import make_deterministic
from train_args import OneLineParser, build_parser, resolve_device, validate_args  # noqa: F401 (re-exported)
from weight_decay_and_learning_rate import adjust_weight_decay_and_learning_rate

class TrainingError(Exception):
    """A problem that ends the run with a one-line message and a non-zero exit status."""

    def __init__(self, message, status=FAILURE):
        super().__init__(message)
        self.status = status


class RunStopped(TrainingError):
    """A signal stopped the run after its checkpoint and results were written (status 128 + signal)."""


class StopOnSignal:
    """SIGTERM (cluster preemption) and SIGINT (Ctrl-C) ask the training loop to stop at the next step
    boundary, where it can write a checkpoint; a second signal interrupts at once."""
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self):
        self.received, self.previous = None, {}
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False


class Progress:
    """A one-line progress bar for terminals; silent when stdout is a file, so logs stay one line per epoch.
    It only counts steps, so it never waits for the GPU."""

    def __init__(self, total, label):
        self.total, self.label = total, label
        self.enabled = sys.stdout.isatty()
        self.every = max(1, total // 50)

    def update(self, step):
        if self.enabled and (step % self.every == 0 or step == self.total):
            filled = 30 * step // self.total
            print(f'\r{self.label} [{"#" * filled}{"." * (30 - filled)}] {step}/{self.total}', end='', flush=True)

    def close(self):
        if self.enabled:
            print('\r' + ' ' * (len(self.label) + 50) + '\r', end='', flush=True)


def train_one_epoch(train_step, batches, batch_size, start_step=0, stop=None, label='', world=Distributed()):
    """One pass over the shuffled, flipped training set, from batch ``start_step`` on.

    Returns the number of steps done in the epoch: all of them, or fewer when ``stop``
    received a signal. The losses stay on the device (``train_step.loss_sum``): no per-step sync.
    Under torchrun each process trains on its shard of every batch; a share of an
    unevenly split last batch is weighted so the averaged gradient is the whole batch's mean.
    """
    train_step.network.train()
    total = batches.num_batches(batch_size, min_batch=world.world_size)
    progress = Progress(total, label)
    step = start_step
    for images, labels, whole in batches.shuffled(batch_size, start_batch=start_step, shard=world.shard,
                                                  min_batch=world.world_size):
        train_step(images, labels, loss_weight=labels.shape[0] * world.world_size / whole)
        step += 1
        progress.update(step)
        if stop is not None and stop.received is not None and step < total:
            break
    progress.close()
    return step


@torch.no_grad()
def validate(network, batches, batch_size, precision='fp32', channels_last=False, world=Distributed()):
    """Mean loss and accuracy (percent) over a whole evaluation set, with running BN statistics.

    The original's arithmetic: batches of ``batch_size``, each batch's summed cross-entropy added
    in float64, divided by the set's size; accuracy is (correct / size) x 100. Nothing is read
    back until the end. Under torchrun each process evaluates a disjoint shard and the sums are
    added: exact counts, no duplicates."""
    network.eval()
    device = batches.images.device
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for images, labels in batches.in_order(batch_size, shard=world.shard):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = network(images)
        total_loss += F.cross_entropy(logits.float(), labels, reduction='sum').double()
        correct += (torch.max(logits, 1)[1] == labels).sum()
    world.sum(total_loss), world.sum(correct)
    return {'loss': total_loss.item() / len(batches), 'accuracy': correct.item() / len(batches) * 100.0}


def prepare_data(args, paths, device):
    """Load the dataset, hold out the paper's validation split, and place all three sets on the device."""
    data = load_dataset(args.dataset, paths['images'], fake_size=args.fake_size)
    train_index, validation_index = split_train_validation(data.train_labels.numpy())
    train_images = data.train_images[train_index]
    mean = std = None
    if args.input_norm == 'dataset':
        if args.dataset == 'cifar10':
            mean, std = PAPER_CIFAR10_MEAN, PAPER_CIFAR10_STD
        else:
            mean, std = channel_mean_std(train_images)
    make = lambda images, labels: ImageBatches(images, labels, device, mean, std)  # noqa: E731
    return {
        'train': make(train_images, data.train_labels[train_index]),
        'val': make(data.train_images[validation_index], data.train_labels[validation_index]),
        'test': make(data.test_images, data.test_labels),
        'num_classes': data.num_classes, 'is_fake': data.is_fake, 'mean': mean, 'std': std,
    }


# With fp16 every SGD step goes through fast_path.sgd_step, which the scheduler cannot see.
warnings.filterwarnings('ignore', message=r'Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`')


def build_optimizer(network, args):
    if args.weight_decay == 0 and args.c <= 1:
        parameters = [p for p in network.parameters() if p.requires_grad]
    else:
        parameters = adjust_weight_decay_and_learning_rate(network, args.weight_decay, args.learning_rate, args.c)
    optimizer = torch.optim.SGD(parameters, lr=args.learning_rate, momentum=args.momentum)
    scheduler = None
    if args.scheduler == 'cos':
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.num_epochs, eta_min=1e-8)
    return optimizer, scheduler


def make_criterion():
    return nn.CrossEntropyLoss()


RUN_CONTROL_FLAGS = ('resume', 'overwrite', 'change_num_epochs')  # how to start, not what the experiment is


def write_results(paths, record):
    write_text(paths['txt'], results_text(record['config'], record['epochs']))
    write_text(paths['json'], json.dumps(record, indent=1) + '\n')


def write_progress(paths, state, best_weights, announce=None):
    """The best weights (when they just improved), the checkpoint, then the results: a crash in between
    leaves the checkpoint ahead of the results, and resuming redoes the epoch. ``announce`` (the epoch's
    log line) is printed only then, so an epoch in the log is an epoch that a resume will not redo."""
    if best_weights:
        save_torch(state['network'], paths['weights'])
    save_torch(state, paths['checkpoint'])
    write_results(paths, state['record'])
    if announce:
        print(('\r\x1b[K' if sys.stdout.isatty() else '') + announce, flush=True)  # over any progress bar


def resume_command(argv):
    flags = [flag for flag in argv if flag != '--overwrite']
    return shlex.join(['python', 'train.py', *flags, *([] if '--resume' in flags else ['--resume'])])


def check_distributed(args, world, parser):
    if world.enabled:
        if args.batch_size % world.world_size:
            parser.error(f'--batch_size {args.batch_size} (the global batch) must be divisible by the '
                         f'{world.world_size} torchrun processes')
        args.cuda_graph = False  # the gradient all-reduce runs eagerly
    if args.sync_bn and not args.device.startswith('cuda'):
        parser.error('--sync_bn needs CUDA (torch.nn.SyncBatchNorm runs on GPUs only)')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = validate_args(parser.parse_args(argv), parser)
    world, args.device = setup(args.device)
    try:
        check_distributed(args, world, parser)
        return train(args, argv, world)
    finally:
        world.close()


def train(args, argv, world):
    """The paper's protocol for one run (on every torchrun process; only rank 0 writes and prints)."""
    say = print if world.is_main else (lambda *a, **k: None)
    started = time.time()
    paths = output_paths(args.path, args.dataset, args.name, args.data_dir)
    for folder in (paths['networks'], paths['results']):
        problem = check_writable(folder)
        if problem:
            raise TrainingError(problem)
    start, previous = find_start(args, paths)
    if start == 'finished':
        if world.is_main:
            os.makedirs(paths['results'], exist_ok=True)
            write_results(paths, previous)  # the checkpoint may be one write ahead of the results
        say(f"{args.name} already finished {len(previous['epochs'])} epochs (test accuracy at the best "
            f"validation epoch: {previous['test_accuracy_at_best']:.2f}%): nothing to do")
        return previous

    device = torch.device(args.device)
    data = prepare_data(args, paths, device)
    if data['is_fake']:
        say('NOTE: --dataset fake is random noise with random labels: its accuracies are meaningless')

    make_deterministic(args.seed)
    network = construct_network(args.network, data['num_classes'], args.dataset, args.bn_weight,
                                args.input_norm).to(device)
    if args.sync_bn and world.enabled:
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    if args.channels_last:
        network = network.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(network, args)
    criterion = make_criterion()
    steps_per_epoch = data['train'].num_batches(args.batch_size, min_batch=world.world_size)
    train_step = TrainStep(world.wrap(network, device), optimizer, criterion, device, args.precision,
                           args.channels_last, use_graph=args.cuda_graph, max_steps=steps_per_epoch)

    config = {key: value for key, value in vars(args).items() if key not in RUN_CONTROL_FLAGS}
    record = new_record(config, device, paths['weights'], fake_data=data['is_fake'], input_mean=data['mean'],
                        input_std=data['std'], train_size=len(data['train']), val_size=len(data['val']),
                        test_size=len(data['test']), world_size=world.world_size)
    first_epoch, start_step, epoch_start_rng = 1, 0, None
    if start == 'resume':
        epoch_start_rng = restore_checkpoint(previous, args, network, optimizer, scheduler, train_step)
        record = {**previous['record'], 'config': config, 'status': 'running', 'world_size': world.world_size}
        first_epoch, start_step = previous['completed_epochs'] + 1, previous['steps_done']
        say(f'resuming {args.name} from {paths["checkpoint"]} at epoch {first_epoch}, step {start_step}')
    elapsed_before = record['wall_time_s']
    if world.is_main:
        os.makedirs(paths['networks'], exist_ok=True)
        os.makedirs(paths['results'], exist_ok=True)
        for key in ('checkpoint', 'weights', 'json', 'txt') if args.overwrite else ():
            if os.path.exists(paths[key]):
                os.remove(paths[key])
    parallel = f' x {world.world_size} processes' if world.enabled else ''
    say(f'{args.name}: {args.network} on {args.dataset} ({len(data["train"])} train, {len(data["val"])} val, '
        f'{len(data["test"])} test) for {args.num_epochs} epochs on {device}{parallel}', flush=True)

    writer = BackgroundWriter()

    def save_progress(completed_epochs, steps_done=0, best_weights=False, announce=None):
        """Snapshot the run on the CPU now and write it (rank 0 only) while the next epoch trains."""
        record['wall_time_s'] = elapsed_before + time.time() - started
        if world.is_main:
            state = checkpoint_state(record, network, optimizer, scheduler, train_step, completed_epochs,
                                     steps_done, epoch_start_rng)
            writer.submit(write_progress, paths, state, best_weights, announce)

    def stopped(signum, where):
        return RunStopped(f'stopped by {signal.Signals(signum).name} {where}; checkpoint {paths["checkpoint"]}. '
                          f'Resume with: {resume_command(argv)}', 128 + signum)

    with StopOnSignal() as stop, writer:  # leaving the block waits for the last write
        for epoch in range(first_epoch, args.num_epochs + 1):
            epoch_started = time.time()
            if start_step == 0:
                epoch_start_rng = torch.get_rng_state()  # the epoch's order and flips are drawn from it
                train_step.begin_epoch()
            else:
                torch.set_rng_state(epoch_start_rng)  # the resumed epoch re-draws its order and flips
            learning_rate = optimizer.param_groups[0]['lr']
            # Processes must agree on where to stop, so under torchrun a signal takes effect at the epoch's end.
            steps_done = train_one_epoch(train_step, data['train'], args.batch_size, start_step,
                                         None if world.enabled else stop, f'epoch {epoch}/{args.num_epochs}', world)
            start_step = 0
            if steps_done < steps_per_epoch:
                record['status'] = 'interrupted'
                save_progress(epoch - 1, steps_done)
                raise stopped(stop.received, f'at epoch {epoch}, step {steps_done}/{steps_per_epoch}')
            bad_step = train_step.first_nonfinite_step(steps_per_epoch)
            bad_step = world.min(steps_per_epoch if bad_step is None else bad_step, device)
            if bad_step < steps_per_epoch:
                raise TrainingError(f'non-finite training loss at epoch {epoch}, step {bad_step + 1}/{steps_per_epoch};'
                                    f' stopped, keeping the checkpoint and results of epoch {epoch - 1}')
            if scheduler is not None:
                scheduler.step()
            world.broadcast_buffers(network)
            val, test = (validate(network, data[part], args.batch_size, args.precision, args.channels_last, world)
                         for part in ('val', 'test'))
            if not math.isfinite(val['loss']):
                raise TrainingError(f'non-finite validation loss after epoch {epoch}; stopped, keeping the '
                                    f'checkpoint and results of epoch {epoch - 1}')
            # The original's training loss: the mean over the epoch's batches of each batch's mean loss.
            train_loss = world.sum(train_step.loss_sum.clone()).item() / world.world_size
            row = {'epoch': epoch, 'train_loss': train_loss / steps_per_epoch,
                   'val_loss': val['loss'], 'val_accuracy': val['accuracy'], 'test_accuracy': test['accuracy'],
                   'learning_rate': learning_rate, 'epoch_time_s': time.time() - epoch_started}
            improved = val['accuracy'] > (record['best_val_accuracy'] or 0.0)  # as the original: from 0
            if improved:
                record.update(best_epoch=epoch, best_val_accuracy=val['accuracy'],
                              test_accuracy_at_best=test['accuracy'])
            record['epochs'].append(row)
            record.update(final_test_accuracy=test['accuracy'],
                          status='finished' if epoch == args.num_epochs else 'running')
            save_progress(epoch, best_weights=improved, announce=(
                f"epoch {epoch:>3}/{args.num_epochs}  train_loss {row['train_loss']:.4f}  "
                f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:6.2f}%  "
                f"test_acc {row['test_accuracy']:6.2f}%  lr {learning_rate:.3g}  {row['epoch_time_s']:.1f}s"
                f"{'  *best' if improved else ''}"))
            if world.any(stop.received is not None, device) and epoch < args.num_epochs:
                raise stopped(stop.received or signal.SIGTERM, f'after epoch {epoch}')

    say(f"done in {record['wall_time_s']:.0f}s: best val_acc {record['best_val_accuracy']:.2f}% at epoch "
        f"{record['best_epoch']}, test_acc there {record['test_accuracy_at_best']:.2f}%; "
        f"weights {paths['weights']}, results {paths['json']}")
    return record


def run(argv=None):
    """Command-line entry: known problems end with a one-line message and a non-zero exit, no traceback."""
    try:
        return main(argv)
    except RunStopped as stopped:
        print(f'train.py: {stopped}', file=sys.stderr)
        sys.exit(stopped.status)
    except (TrainingError, CheckpointError, DatasetError) as error:
        print(f'train.py: error: {error}', file=sys.stderr)
        sys.exit(getattr(error, 'status', FAILURE))
    except OSError as error:  # a full disk, a vanished folder: the files written before stay complete
        print(f'train.py: error: {error.strerror or error}: {error.filename or ""}', file=sys.stderr)
        sys.exit(FAILURE)
    except KeyboardInterrupt:
        print('train.py: interrupted; --resume continues from the last checkpoint', file=sys.stderr)
        sys.exit(130)


if __name__ == '__main__':
    run()
