"""Realistic BatchNorm statistics for checks of re-parameterised (fused) networks."""
import torch
import torch.nn as nn


def realistic_bn(model, seed=0):
    """BN statistics measured on a random batch, then perturbed: running_var x U(0.5, 1.5), weight U(0.5, 1),
    bias and mean shifts of about 0.1.

    Purely random statistics are not enough here: represnet20 sums five branches per layer, so arbitrary
    running variances let activations grow by orders of magnitude over 19 layers (logits ~1e4) and a
    float32 comparison would only test rounding. Measured-then-perturbed statistics keep activations O(1)
    while still making every BN's fold non-trivial.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32, generator=g))
    for m in bns:
        n = m.num_features
        with torch.no_grad():
            m.running_mean.add_((torch.rand(n, generator=g) - 0.5) * 0.2 * m.running_var.sqrt())
            m.running_var.mul_(0.5 + torch.rand(n, generator=g))
            m.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
            m.bias.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
        m.momentum = 0.1
    return model.eval()
