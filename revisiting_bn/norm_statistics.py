"""The paper's two observations, measured: per normalisation layer, gamma and beta against their start, and x_hat.

The paper builds on two observations: the learned BN scale gamma and shift beta stay close to
their initial values, and the normalisation x_hat = (x - mean) / sqrt(var + eps) can yield overly
large values, which gamma then carries through the network. After every epoch (and once before
training) a run measures both, on a fixed set of images (the first validation images, the same
every epoch), for every normalisation layer (BN, Scale BN, MABN, the input BN) by name in network
order: gamma's and beta's mean, std, min, max and mean absolute distance from their initial
values; the largest |x_hat|, the share of |x_hat| above THRESHOLD, and the RMS of the layer's
output.

After an epoch the forward pass runs in evaluation mode, so x_hat uses each layer's running
statistics (batch statistics for a layer that keeps none), as at test time. Before training the
running statistics are still BN's initial ones (mean 0, variance 1), which say nothing about the
data, so epoch 0 is measured with the batch's own statistics, as the first training step computes
them: the normalisation layers in training mode, every other layer (dropout) in evaluation mode,
and every buffer the normalisation layers update put back afterwards. Either way nothing changes:
no buffer, no parameter, no random stream. x_hat is the layer itself with gamma = 1 and beta = 0
(torch.func.functional_call), so it is exactly what each kind computes, MABN included; for a layer that
applies more after its batch norm (timm's BatchNormAct2d: an activation, dropout), its batch norm alone
(batch_norm.plain_view), so x_hat is measured before the activation.

A layer whose input varies less than its eps normalises mostly eps: x_hat's RMS,
sqrt(var / (var + eps)) with batch statistics, falls below 1, and what the layer passes on is no
longer the signal. So after every epoch x_hat's RMS is also measured with batch statistics
('batch_xhat_rms'; with running statistics a low RMS may only mean that they are stale).
``signal_problems`` names the layers whose batch x_hat RMS is under VANISHING_XHAT_RMS, and those
whose values explode (x_hat RMS over EXPLODING_XHAT_RMS with running statistics) or are not
finite; train.py warns about them.
"""
import math

import torch
import torch.nn as nn

from .batch_norm import NORM_LAYER_TYPES, plain_view
from .networks import layer_name
from .protocol import XHAT_THRESHOLD

__all__ = ['THRESHOLD', 'VANISHING_XHAT_RMS', 'EXPLODING_XHAT_RMS', 'norm_layers', 'NormStatistics',
           'signal_problems', 'signal_warnings']

THRESHOLD = XHAT_THRESHOLD
MEASURED_IMAGES = 128
# x_hat's RMS is sqrt(var / (var + eps)) with batch statistics: under 0.5 the input's variance is below a third of eps.
VANISHING_XHAT_RMS = 0.5
# With running statistics a healthy x_hat has an RMS near 1; 100 means they are 10^4 times off the data's variance.
EXPLODING_XHAT_RMS = 100.0


def norm_layers(network):
    """(name, layer) of every normalisation layer with a mean and variance (not GroupNorm/LayerNorm), in order, each
    by its name inside the network (networks.layer_name: the input BN is 'input_bn'), the same in every
    configuration of the network."""
    return [(layer_name(network, name) or 'network', module) for name, module in network.named_modules()
            if isinstance(module, NORM_LAYER_TYPES) and not isinstance(module, (nn.GroupNorm, nn.LayerNorm))]


def _summary(values, initial):
    values = values.detach().double()
    return {'mean': values.mean().item(), 'std': values.std(unbiased=False).item(), 'min': values.min().item(),
            'max': values.max().item(), 'distance': (values - initial.double()).abs().mean().item()}


class NormStatistics:
    """Measures ``network``'s normalisation layers; the initial gamma and beta are taken when it is made (before
    any training or restored checkpoint)."""

    def __init__(self, network, images):
        self.network, self.images = network, images
        self.layers = norm_layers(network)
        self.views = {name: plain_view(layer) for name, layer in self.layers}  # x_hat before any activation
        self.initial = {name: {key: getattr(layer, key).detach().clone() for key in ('weight', 'bias')
                               if isinstance(getattr(layer, key, None), torch.Tensor)}
                        for name, layer in self.layers}

    def _hook(self, name, found):
        def hook(layer, inputs, output):
            if name in found:  # the call below, with gamma = 1 and beta = 0, passes through this hook too
                return
            found[name] = None
            x, view = inputs[0], self.views[name].train(layer.training)
            params = {key: torch.ones_like(value) if key == 'weight' else torch.zeros_like(value)
                      for key, value in layer.named_parameters(recurse=False) if key in ('weight', 'bias')}
            x_hat = torch.func.functional_call(view, params, (x,)) if params else output
            x_hat, output = x_hat.detach().float(), output.detach().float()
            found[name] = {'xhat_max_abs': x_hat.abs().max().item(), 'xhat_rms': x_hat.pow(2).mean().sqrt().item(),
                           'xhat_share_above': (x_hat.abs() > THRESHOLD).double().mean().item(),
                           'output_rms': output.pow(2).mean().sqrt().item()}
        return hook

    def _batch_statistics_possible(self):
        # A SyncBatchNorm in training mode waits for the other processes, which do not measure.
        return not any(isinstance(layer, nn.SyncBatchNorm) for _, layer in self.layers)

    @torch.no_grad()
    def measure(self, batch_statistics=False):
        """{layer name: statistics} now (see the module's docstring); with ``batch_statistics``, x_hat from the
        images' own statistics, as a training step computes it, every buffer put back afterwards."""
        found = self._forward(batch_statistics)
        for name, layer in self.layers:
            for key, short in (('weight', 'gamma'), ('bias', 'beta')):
                if key in self.initial[name]:
                    for stat, value in _summary(getattr(layer, key), self.initial[name][key]).items():
                        found[name][f'{short}_{stat}'] = value
        return found

    @torch.no_grad()
    def _forward(self, batch_statistics):
        """{layer name: x_hat's and the output's statistics} from one forward pass over the images."""
        found, was_training = {}, self.network.training
        batch_statistics = batch_statistics and self._batch_statistics_possible()
        buffers = [(buffer, buffer.clone()) for _, layer in self.layers for buffer in layer.buffers()] \
            if batch_statistics else []
        handles = [layer.register_forward_hook(self._hook(name, found)) for name, layer in self.layers]
        try:
            self.network.eval()
            for _, layer in self.layers if batch_statistics else ():
                layer.train()
            self.network(self.images)
        finally:
            for handle in handles:
                handle.remove()
            for buffer, saved in buffers:
                buffer.copy_(saved)
            self.network.train(was_training)
        return found

    def measured(self, epoch):
        """This moment's statistics as epoch ``epoch`` (0: before training, with the batch's own statistics), for
        results.add_norm_statistics: what was measured and how ('about'), the epoch's per-layer statistics, and the
        layers' current gammas."""
        possible = self._batch_statistics_possible()
        batch = epoch == 0 and possible
        layers = self.measure(batch_statistics=batch)
        if possible and not batch:
            for name, stats in self._forward(batch_statistics=True).items():
                layers[name]['batch_xhat_rms'] = stats['xhat_rms']
        return {'about': {'threshold': THRESHOLD, 'images': len(self.images),
                          'layers': [name for name, _ in self.layers]},
                'epoch': {'epoch': epoch, 'statistics': 'batch' if batch else 'running', 'layers': layers},
                'gamma': {name: layer.weight.detach().cpu().tolist() for name, layer in self.layers
                          if isinstance(getattr(layer, 'weight', None), torch.Tensor)}}


def signal_problems(entry):
    """{'vanishing': [...], 'exploding': [...]}: the layers of one measurement (an epoch of the record's
    norm_statistics) whose x_hat, with batch statistics, has an RMS under VANISHING_XHAT_RMS (their input varies
    less than a third of their eps), and those whose x_hat's RMS exceeds EXPLODING_XHAT_RMS or whose statistics are
    not finite; kinds without layers are left out."""
    problems, batch = {'vanishing': [], 'exploding': []}, entry.get('statistics') == 'batch'
    for name, stats in entry['layers'].items():
        values = [stats.get(key) for key in ('xhat_rms', 'batch_xhat_rms', 'xhat_max_abs', 'output_rms')
                  if stats.get(key) is not None]
        batch_rms = stats.get('xhat_rms') if batch else stats.get('batch_xhat_rms')
        if not all(math.isfinite(v) for v in values) or stats.get('xhat_rms', 0.0) > EXPLODING_XHAT_RMS:
            problems['exploding'].append(name)
        elif batch_rms is not None and batch_rms < VANISHING_XHAT_RMS:
            problems['vanishing'].append(name)
    return {kind: names for kind, names in problems.items() if names}


def _names(names, most=4):
    return ', '.join(names[:most]) + (f' and {len(names) - most} more' if len(names) > most else '')


def signal_warnings(layers, entry):
    """The warnings one measurement (an epoch of the record's norm_statistics, of the layers ``layers`` in network
    order) calls for: the signal vanishes when the last normalisation layer, or at least a quarter of them, get
    inputs that vary less than a third of their eps; it explodes when any layer's x_hat is far off or not finite.
    Each is {'epoch', 'kind', 'layers', 'message'}, the message one line saying what to look at and what to try."""
    problems, epoch = signal_problems(entry), entry['epoch']
    when = 'before training (epoch 0, batch statistics)' if epoch == 0 else f'after epoch {epoch}'
    warnings = []
    vanishing = problems.get('vanishing', [])
    if vanishing and (layers[-1] in vanishing or len(vanishing) >= len(layers) / 4):
        warnings.append({'epoch': epoch, 'kind': 'vanishing', 'layers': vanishing, 'message': (
            f'WARNING: the signal vanishes {when}: {len(vanishing)} of the {len(layers)} normalisation layers get '
            f'inputs that vary less than a third of their eps (x_hat RMS under {VANISHING_XHAT_RMS:g}: '
            f'{_names(vanishing)}), so what they pass on is mostly eps, not the images, and training may stall '
            f'near chance; the x_hat RMS of every layer is in the results\' .norm_statistics.csv, and report.py '
            f'draws xhat.png; try a larger --bn_weight (0.5 or 1)')})
    if problems.get('exploding'):
        exploding = problems['exploding']
        warnings.append({'epoch': epoch, 'kind': 'exploding', 'layers': exploding, 'message': (
            f'WARNING: the signal explodes {when}: x_hat is not finite or its RMS exceeds {EXPLODING_XHAT_RMS:g} '
            f'in {_names(exploding)} (the running statistics no longer match what the layers get); see xhat.png of '
            f'report.py; try a smaller --learning_rate or a larger --c')})
    return warnings
