"""Liu et al. 2021, "Exploring Inter-Channel Correlation for Diversity-preserved Knowledge Distillation"
(ICKD-C, ``--distill ickd``).

The student's penultimate feature map is embedded to the teacher's width (1x1 conv + BN), both maps are
turned into channel-by-channel Gram matrices, every Gram row is L2-normalised, and the loss is the summed
squared difference divided by (channels x batch).

Which tensor is "the penultimate map" (ICKD rewrote the model forwards; see the spec, section 5.2):

* WRN (``wrn_*``, ``mywrn_*``): relu(bn1(block3 output)), the post-BN-ReLU map that feeds the pooling,
  shape [B, 64w, 8, 8]. RepDistiller's ``feat[-2]`` for WRN is the raw pre-activation block3 output, so
  the distiller taps the WRN's final ReLU with a forward hook instead; the feature list every other method
  sees is untouched.
* CIFAR ResNets (``resnet*``, ``myresnet*``, ``represnet*``) and ResNet50: ``feat[-2]``, the post-ReLU
  output of the last stage, which is also ICKD's tensor.
* VGG: ``feat[-2]``, relu(block4), as in ICKD.
* MobileNetV2 and ShuffleV2: RepDistiller's ``feat[-2]`` (ICKD moved these to the last 1x1 conv output,
  but it reports no result with such students); ShuffleV1 and others: ``feat[-2]``.

ICKD also built an ``embed_t`` that forward never uses. It receives no gradient, so SGD (weight decay
included) never touches it; its only effect upstream was drawing initialisation numbers from the RNG, which
matters for seed-exact reruns of that code base only. It is not created here.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32

from .base import Batch, Distiller, Outputs, POST, register


def ickd_loss(f_s: torch.Tensor, f_t: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Inter-channel correlation loss between an (already embedded) student map and a teacher map.

    Both are [B, C, ...]; the spatial sizes may differ because only the C x C Gram matrices are compared.
    The value lies in [0, 4]: each normalised row is a unit (or zero) vector, so a row pair differs by at
    most 2 in L2, i.e. 4 in squared norm, and there are C rows per sample.
    """
    if f_s.shape[:2] != f_t.shape[:2]:
        raise ValueError(f"ICKD needs the embedded student map and the teacher map to agree in batch and "
                         f"channels, got {tuple(f_s.shape)} and {tuple(f_t.shape)}")
    b, c = f_t.shape[:2]
    # Gram sums grow with H*W; bf16 autocast would round them too coarsely.
    s = f_s.float().reshape(b, c, -1)
    t = f_t.float().reshape(b, c, -1)
    g_s = F.normalize(torch.bmm(s, s.transpose(1, 2)), p=2, dim=2, eps=eps)
    g_t = F.normalize(torch.bmm(t, t.transpose(1, 2)), p=2, dim=2, eps=eps)
    return (g_s - g_t).pow(2).sum() / (c * b)


class ChannelEmbed(nn.Module):
    """1x1 conv (no bias) from C_s to C_t followed by BatchNorm (ICKD's ``Embed``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv2d = nn.Conv2d(dim_in, dim_out, kernel_size=1, bias=False)
        self.l2norm = nn.BatchNorm2d(dim_out)  # ICKD's name; it is a BN, not an L2 normalisation

    def forward(self, x):
        return self.l2norm(self.conv2d(x))


class OutputTap:
    """Remembers the latest output of one module through a forward hook.

    Not an ``nn.Module``, so it adds nothing to the distiller's state dict.
    """

    def __init__(self, module: nn.Module):
        self.value: Optional[torch.Tensor] = None
        self.handle = module.register_forward_hook(self._store)

    def _store(self, module, inputs, output):
        self.value = output

    def remove(self) -> None:
        self.handle.remove()
        self.value = None


def ickd_tap(model: nn.Module) -> Optional[OutputTap]:
    """A hook on the module whose output is ICKD's penultimate map, or None when ``feat[-2]`` is it.

    The model says which module that is (``penultimate_map_module``): a WRN's head computes relu(bn1(block3
    output)) with a ReLU used nowhere else, while its ``feat[-2]`` is the raw block3 output.
    """
    module = model.penultimate_map_module()
    return None if module is None else OutputTap(module)


@register("ickd")
class ICKD(Distiller):
    """ICKD-C. Defaults ``-r 1 -a 0 -b 2.5`` ("w/o KL"); the README's "Ours" adds ``-a 1``.

    Trainable: the student embedding (conv + BN), optimised with the student (weight decay included).
    """

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 2.5}
    # ICKD seeds every RNG (seed 0) and runs cuDNN deterministically; train_student applies this on CUDA.
    deterministic_cudnn = True

    def __init__(self, ctx):
        super().__init__(ctx)
        # WRN's tapped map has the channels of feat[-2] (block3 output) since BN keeps the width.
        s_dim = int(ctx.feat_s[-2].shape[1])
        t_dim = int(ctx.feat_t[-2].shape[1])
        if ctx.feat_s[-2].dim() != 4 or ctx.feat_t[-2].dim() != 4:
            raise ValueError("--distill ickd needs 4-D penultimate feature maps (feat[-2]) from both networks")
        self.embed_s = ChannelEmbed(s_dim, t_dim)
        self._tap_s = ickd_tap(ctx.student)
        self._tap_t = ickd_tap(ctx.teacher) if ctx.teacher is not None else None

    @staticmethod
    def _map(out: Outputs, tap: Optional[OutputTap]) -> torch.Tensor:
        if tap is not None:
            if tap.value is None:
                raise RuntimeError("ICKD's WRN hook has not seen a forward pass yet")
            value = tap.value
            if torch.is_inference(value):
                # the teacher ran under inference_mode (engine.forward.teacher_outputs), and the tap bypasses
                # the copy that function makes of its outputs: inference tensors cannot be saved for backward
                value = value.clone()
            # the tap bypasses Distiller.float32_loss's upcast of the outputs too
            return at_least_float32(value)
        return out.feats[-2]

    def ickd_maps(self, out_s: Outputs, out_t: Outputs) -> List[torch.Tensor]:
        """The student and teacher maps ICKD compares (before the student embedding)."""
        return [self._map(out_s, self._tap_s), self._map(out_t, self._tap_t)]

    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        f_s, f_t = self.ickd_maps(out_s, out_t)
        return ickd_loss(self.embed_s(f_s), f_t.detach())

    def trainable_modules(self):
        return [self.embed_s]

    def remove_hooks(self) -> None:
        for tap in (self._tap_s, self._tap_t):
            if tap is not None:
                tap.remove()
