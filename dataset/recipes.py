"""The data sets' reference recipes: option values a run on that data set takes where no flag, ``--recipe`` or add-on
gives one (the precedence rule is in ``assembly/options.py``; the CIFAR sets have none, the methods' own defaults
being their CIFAR recipes).

ImageNet is mdistiller's (``configs/imagenet/*``, spec 3.4): 100 epochs, SGD momentum 0.9, weight decay 1e-4, lr x0.1
after epochs 30, 60 and 90, a global batch of 512 at lr 0.2 (CRD, ReviewKD: 256 at 0.1; OFD: 128 at 0.05), test batch
128, checkpoints every 10 epochs; KD at T 1 with CE 0.5 / KD 0.5; DKD with T 1, one warm-up epoch and beta 0.5
(ResNet-34 -> ResNet-18) or 2.0 (ResNet-50 -> MobileNetV1); DOT's delta 0.09. Methods mdistiller has no ImageNet
config for take their own references' values (spec 3.5/3.6): DIST CE + 2 DIST(tau 1) at batch 256 / lr 0.1 with
Nesterov (DIST's resnet_dist.yaml); NKD batch 256 / lr 0.1 (cls_KD); MLKD T 1 with CE 0.5 / KD 0.5 at batch 512, lr
0.1 for ResNet-34 -> ResNet-18 and 0.2 otherwise (its kd_ours.yaml; its second pair is ResNet-50 -> MobileNetV2).
CRD draws its negatives with replacement, as RepDistiller's ImageFolderSample and mdistiller's ImageNet sampler do.

Tiny-ImageNet is mdistiller's only Tiny-ImageNet config (``configs/tiny_imagenet/dot``): 200 epochs, global batch
256, lr 0.2, x0.1 after 60, 120 and 160, weight decay 5e-4.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

IMAGENET = {"epochs": 100, "global_batch_size": 512, "learning_rate": 0.2, "weight_decay": 1e-4,
            "lr_decay_epochs": "30,60,90", "lr_decay_rate": 0.1, "momentum": 0.9, "test_batch_size": 128,
            "save_freq": 10}

R34_R18 = ("ResNet34", "ResNet18")
R50_MV1 = ("ResNet50", "MobileNetV1")

# mdistiller's DKD beta per pair; other pairs: not found, the ResNet-34 -> ResNet-18 value
DKD_BETA = {R34_R18: 0.5, R50_MV1: 2.0}
# mdistiller's ReviewKD weight per pair; other pairs: not found, the ResNet-34 -> ResNet-18 value
REVIEWKD_WEIGHT = {R34_R18: 1.0, R50_MV1: 8.0}

IMAGENET_METHODS = {
    "kd": {"gamma": 0.5, "alpha": 0.5, "beta": 0.0, "kd_T": 1.0},
    "crd": {"global_batch_size": 256, "learning_rate": 0.1, "nce_replace": True},
    "ofd": {"global_batch_size": 128, "learning_rate": 0.05, "gamma": 1.0, "alpha": 0.0, "beta": 1e-4},
    "dist": {"global_batch_size": 256, "learning_rate": 0.1, "gamma": 1.0, "alpha": 0.0, "beta": 2.0,
             "dist_tau": 1.0, "nesterov": True},
    "nkd": {"global_batch_size": 256, "learning_rate": 0.1},
}


def imagenet_recipe(method: Optional[str], teacher: Optional[str], student: str) -> Dict[str, Any]:
    out: Dict[str, Any] = dict(IMAGENET)
    if method is None:
        return out
    out["dot_delta"] = 0.09
    pair = (teacher, student)
    out.update(IMAGENET_METHODS.get(method, {}))
    if method == "dkd":
        out.update({"kd_T": 1.0, "dkd_warmup": 1, "dkd_beta": DKD_BETA.get(pair, DKD_BETA[R34_R18])})
    elif method == "reviewkd":
        out.update({"global_batch_size": 256, "learning_rate": 0.1, "gamma": 1.0, "alpha": 0.0,
                    "beta": REVIEWKD_WEIGHT.get(pair, REVIEWKD_WEIGHT[R34_R18])})
    elif method == "mlkd":
        out.update({"gamma": 0.5, "alpha": 0.0, "beta": 0.5, "kd_T": 1.0,
                    "learning_rate": 0.1 if pair == R34_R18 else 0.2})
    return out


TINY_IMAGENET = {"epochs": 200, "global_batch_size": 256, "learning_rate": 0.2, "weight_decay": 5e-4,
                 "lr_decay_epochs": "60,120,160", "lr_decay_rate": 0.1, "momentum": 0.9}


def tiny_imagenet_recipe(method: Optional[str], teacher: Optional[str], student: str) -> Dict[str, Any]:
    return dict(TINY_IMAGENET)
