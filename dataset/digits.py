"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images): the offline quickstart set.

Upsampled once to 32x32x3 so every CIFAR architecture runs on it unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import register_dataset

# Fixed split: 20% of each class held out with a fixed seed, so numbers are comparable across runs.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _stratified_split(y: torch.Tensor, test_fraction: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        n_test = int(round(idx.numel() * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    return torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values


@register_dataset("digits")
def load_digits(data_root):
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError as exc:  # pragma: no cover - requirements.txt installs it
        raise ImportError("--dataset digits needs scikit-learn (pip install -r requirements.txt)") from exc
    d = sk_load()
    x = torch.from_numpy(d.images).float()  # (N, 8, 8), values 0..16
    y = torch.from_numpy(d.target).long()
    x = F.interpolate(x[:, None] / 16.0, size=(32, 32), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    tr, te = _stratified_split(y, TEST_FRACTION, SPLIT_SEED)
    train_x = x[tr]
    mean = (train_x.float() / 255).mean().item()
    std = (train_x.float() / 255).std().item()
    # Horizontal flips turn digits into other glyphs, so digits trains with crops only.
    return dict(train_x=train_x, train_y=y[tr], test_x=x[te], test_y=y[te], num_classes=10,
                mean=(mean,) * 3, std=(std,) * 3, flip=False)
