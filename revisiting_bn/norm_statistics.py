"""The paper's two observations, measured: per normalisation layer, gamma and beta against their start, and x_hat.

The paper builds on two observations: the learned BN scale gamma and shift beta stay close to
their initial values, and the normalisation x_hat = (x - mean) / sqrt(var + eps) can yield overly
large values, which gamma then carries through the network. After every epoch (and once before
training) a run measures both, on a fixed set of images (the first validation images, the same
every epoch), for every normalisation layer (BN, Scale BN, MABN, the input BN) by name in network
order: gamma's and beta's mean, std, min, max and mean absolute distance from their initial
values; the largest |x_hat|, the share of |x_hat| above THRESHOLD, and the RMS of the layer's
output.

The forward pass runs in evaluation mode, so x_hat uses each layer's running statistics (batch
statistics for a layer that keeps none), as at test time: nothing is updated, nothing is drawn at
random, no parameter changes. x_hat is the layer itself with gamma = 1 and beta = 0
(torch.func.functional_call), so it is exactly what each kind computes, MABN included.
"""
import torch
import torch.nn as nn

from .batch_norm import NORM_LAYER_TYPES
from .networks import layer_name

__all__ = ['THRESHOLD', 'norm_layers', 'NormStatistics']

# |x_hat| > 3 has probability 0.27% for a standard normal: a much larger share means heavy tails, the "overly large
# values" of the paper.
THRESHOLD = 3.0
MEASURED_IMAGES = 128


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
        self.initial = {name: {key: getattr(layer, key).detach().clone() for key in ('weight', 'bias')
                               if isinstance(getattr(layer, key, None), torch.Tensor)}
                        for name, layer in self.layers}

    def _hook(self, name, found):
        def hook(layer, inputs, output):
            if name in found:  # the call below, with gamma = 1 and beta = 0, passes through this hook too
                return
            found[name] = None
            x = inputs[0]
            params = {key: torch.ones_like(value) if key == 'weight' else torch.zeros_like(value)
                      for key, value in layer.named_parameters(recurse=False) if key in ('weight', 'bias')}
            x_hat = torch.func.functional_call(layer, params, (x,)) if params else output
            x_hat, output = x_hat.detach().float(), output.detach().float()
            found[name] = {'xhat_max_abs': x_hat.abs().max().item(),
                           'xhat_share_above': (x_hat.abs() > THRESHOLD).double().mean().item(),
                           'output_rms': output.pow(2).mean().sqrt().item()}
        return hook

    @torch.no_grad()
    def measure(self):
        """{layer name: statistics} now (see the module's docstring)."""
        found, was_training = {}, self.network.training
        handles = [layer.register_forward_hook(self._hook(name, found)) for name, layer in self.layers]
        try:
            self.network.eval()
            self.network(self.images)
        finally:
            for handle in handles:
                handle.remove()
            self.network.train(was_training)
        for name, layer in self.layers:
            for key, short in (('weight', 'gamma'), ('bias', 'beta')):
                if key in self.initial[name]:
                    for stat, value in _summary(getattr(layer, key), self.initial[name][key]).items():
                        found[name][f'{short}_{stat}'] = value
        return found

    def measured(self, epoch):
        """This moment's statistics as epoch ``epoch`` (0: before training), for results.add_norm_statistics:
        what was measured and how ('about'), the epoch's per-layer statistics, and the layers' current gammas."""
        return {'about': {'threshold': THRESHOLD, 'images': len(self.images),
                          'layers': [name for name, _ in self.layers]},
                'epoch': {'epoch': epoch, 'layers': self.measure()},
                'gamma': {name: layer.weight.detach().cpu().tolist() for name, layer in self.layers
                          if isinstance(getattr(layer, 'weight', None), torch.Tensor)}}
