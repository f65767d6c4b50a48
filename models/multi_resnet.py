"""BYOT ("Be Your Own Teacher", Zhang et al. 2019) multi-exit CIFAR ResNets, after the unofficial
luanyunteng/pytorch-be-your-own-teacher code: ``multi_resnet18_kd`` and ``multi_resnet50_kd``.

A CIFAR ResNet18/50 (3x3 stem, no max-pool, four stages at 32/16/8/4 pixels) with a classifier after
each of the first three stages ("classifier 1/4 .. 3/4") besides the usual one ("4/4"). Each branch is
a bottleneck 1x1 -> kxk (stride k) -> 1x1, every conv followed by BN and ReLU, that brings the stage
output to the 4x4 shape of the last stage, then global average pooling and a linear layer.

Forward contract (``model_dict`` models all share the first two forms):

* ``model(x)`` -> logits of the deepest classifier (B, C); so validation, teachers and every other
  distillation method see an ordinary network whose output is classifier 4/4.
* ``model(x, is_feat=True)`` -> ``(feats, logits)`` with RepDistiller's feature layout
  ``[stem, stage1, stage2, stage3, stage4, pooled vector]`` (post-ReLU maps; ``preact`` is accepted but
  the post-activation maps are returned, as the reference has no pre-activation outputs).
* ``model.branch_outputs(feats)`` -> ``(logits, pooled)``: lists with the logits and the pooled
  (B, 512e) branch features of classifiers 1/4..3/4, computed from ``feats`` of the call above. The
  ``byot`` distiller uses it, so the backbone runs once per step.
* ``model.exit_logits(x)`` -> ``[z1, z2, z3, z4]`` (deepest last). ``engine.evaluate.validate`` reports
  every exit and their ensemble for models that have this method.
* ``model.byot_outputs(x)`` -> the reference's 8-tuple ``(z4, z1, z2, z3, final_fea, fea1, fea2, fea3)``
  with (B, 512e, 1, 1) features.

State-dict keys are the reference's (``conv1``, ``layerN``, ``bottleneckK_1``, ``middle_fcK``, ``fc``).
The reference also builds ``downsample{1,2,3}_1`` (1x1 conv + BN) that its forward never uses. No
checkpoint of the reference is published (none in its repository at the spec's commit, none linked from
its README), so they are not needed for loading released weights and are left out by default: they
change no output, only add parameters (and weight decay work). ``unused_downsample=True`` builds them,
giving the reference's exact parameter list; a checkpoint trained with the reference code also loads into
the default model after :func:`drop_unused_downsample` (``validation.py`` applies it).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from .features import FeatureMaps, ZooModel
from .init import init_kaiming_fan_out
from .registry import models_defined_in, register_model

__all__ = ["MultiResNet", "multi_resnet18_kd", "multi_resnet50_kd", "BYOT_MODELS", "drop_unused_downsample"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(h)) + skip)


class BottleneckBlock(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        # torchvision-v1.5 style: the stride sits on the 3x3 conv
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        return self.relu(self.bn3(self.conv3(h)) + skip)


def branch_bottleneck(cin: int, cout: int, k: int) -> nn.Sequential:
    """1x1 (to cout/4) -> kxk stride k -> 1x1 (to cout), each with BN + ReLU; convs keep their bias
    (the reference leaves nn.Conv2d's default)."""
    mid = cout // 4
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(),
        nn.Conv2d(mid, mid, k, stride=k), nn.BatchNorm2d(mid), nn.ReLU(),
        nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(),
    )


class MultiResNet(ZooModel, nn.Module):
    # stage widths before expansion, and the stride of each branch's kxk conv (32/16/8 -> 4 pixels)
    WIDTHS = (64, 128, 256, 512)
    BRANCH_STRIDES = (8, 4, 2)
    # The feature list holds four stage maps, but milestone checking has always compared the first three
    # here (only the resnetv2 family was counted as four-stage); kept so --mc runs stay comparable.
    num_stages = 3

    def __init__(self, block, layers, num_classes: int = 100, unused_downsample: bool = False):
        super().__init__()
        e = block.expansion
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        out = 512 * e
        # Registration order follows the reference so that parameters() (and an optimizer state
        # saved next to the weights) line up with it.
        for k, (width, s) in enumerate(zip(self.WIDTHS[:3], self.BRANCH_STRIDES), start=1):
            if unused_downsample:
                self.add_module(f"downsample{k}_1", nn.Sequential(_conv1x1(width * e, out, stride=s),
                                                                  nn.BatchNorm2d(out)))
            self.add_module(f"bottleneck{k}_1", branch_bottleneck(width * e, out, s))
            self.add_module(f"avgpool{k}", nn.AdaptiveAvgPool2d(1))
            self.add_module(f"middle_fc{k}", nn.Linear(out, num_classes))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(out, num_classes)
        self.feature_dim = out
        self.stage_widths = tuple(w * e for w in self.WIDTHS)

        init_kaiming_fan_out(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    # ------------------------------------------------------------------ forwards
    def _backbone(self, x) -> List[torch.Tensor]:
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4, torch.flatten(self.avgpool(f4), 1)]

    def features(self, x) -> FeatureMaps:
        # The blocks' in-place ReLU overwrites each pre-activation sum, as in the reference, so both
        # lists hold the post-ReLU maps.
        feats = self._backbone(x)
        return FeatureMaps(self.fc(feats[-1]), feats, list(feats))

    def get_feat_modules(self) -> nn.ModuleList:
        # the trunk only: the exits' branches are classifiers of their own
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4])

    def get_bn_before_relu(self) -> List[nn.BatchNorm2d]:
        last = self.layer1[-1]
        name = "bn3" if isinstance(last, BottleneckBlock) else "bn2"
        return [getattr(stage[-1], name) for stage in (self.layer1, self.layer2, self.layer3, self.layer4)]

    def branch_outputs(self, feats: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Logits and pooled features of classifiers 1/4..3/4 from the stage outputs ``feats[1..3]``."""
        logits, pooled = [], []
        for k in (1, 2, 3):
            h = getattr(self, f"bottleneck{k}_1")(feats[k])
            h = torch.flatten(getattr(self, f"avgpool{k}")(h), 1)
            pooled.append(h)
            logits.append(getattr(self, f"middle_fc{k}")(h))
        return logits, pooled

    def exit_logits(self, x) -> List[torch.Tensor]:
        feats, z4 = self.forward(x, is_feat=True)
        branch, _ = self.branch_outputs(feats)
        return branch + [z4]

    def byot_outputs(self, x):
        feats, z4 = self.forward(x, is_feat=True)
        (z1, z2, z3), fea = self.branch_outputs(feats)
        as_map = [f[:, :, None, None] for f in [feats[-1]] + fea]
        return (z4, z1, z2, z3, *as_map)


@register_model("multi_resnet18_kd")
def multi_resnet18_kd(num_classes: int = 100, unused_downsample: bool = False) -> MultiResNet:
    return MultiResNet(BasicBlock, [2, 2, 2, 2], num_classes, unused_downsample)


@register_model("multi_resnet50_kd")
def multi_resnet50_kd(num_classes: int = 100, unused_downsample: bool = False) -> MultiResNet:
    return MultiResNet(BottleneckBlock, [3, 4, 6, 3], num_classes, unused_downsample)


def drop_unused_downsample(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A reference-trained state dict without the never-used ``downsample{1,2,3}_1`` entries."""
    dead = ("downsample1_1.", "downsample2_1.", "downsample3_1.")
    return {k: v for k, v in sd.items() if not k.removeprefix("module.").startswith(dead)}


# A view of the registry (registration happens in the decorators above).
BYOT_MODELS = models_defined_in(__name__)
