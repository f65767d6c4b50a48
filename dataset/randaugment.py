"""RandAugment with Cutout (the FixMatch-style variant MLKD's strong view uses) on whole uint8 batches on the device.

Per image: ``n`` operations drawn with replacement from the 14 below, each with a magnitude ``v ~ U(lo, hi)`` of its
own range, applied in order; then always Cutout, a square of side ``U(0, 0.5) * width`` filled with RGB (125, 123,
114). Every operation is the PIL operation of the reference (MLKD's ``RandAugment(2, 10)``; ``m`` is unused there)
computed for all images at once with tensor ops, without PIL and without a host sync:

* lookup-table ops (AutoContrast, Equalize, Posterize, Solarize, Identity): one 256-entry table per image and
  channel, built as ``PIL.ImageOps`` builds it, applied by one gather;
* geometric ops (Rotate, ShearX/Y, TranslateX/Y): PIL's affine transform with nearest sampling (the source pixel is
  ``floor`` of the inverse-mapped pixel centre; outside the image: black), one gather for all five;
* enhance ops (Brightness, Color, Contrast, Sharpness): PIL's ``blend(degenerate, image, v)`` truncated to uint8,
  with the degenerate image of each (black; the image's luma; its mean luma; the 3x3 SMOOTH filter, border kept).

Cutout's centre reproduces the reference's ``np.random.uniform(width)``, i.e. ``uniform(low=width, high=1)``, which
lies in (1, width] (spec 1.7: REPRODUCE), and PIL's rectangle includes its far corner. All draws come from the
caller's generator, so a batch's strong view depends only on (seed, epoch) like the rest of the pipeline.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Tuple

import torch
import torch.nn.functional as F

# (name, lo, hi): the reference's operation list and magnitude ranges, in its order
OPS: Tuple[Tuple[str, float, float], ...] = (
    ("AutoContrast", 0.0, 1.0), ("Brightness", 0.05, 0.95), ("Color", 0.05, 0.95), ("Contrast", 0.05, 0.95),
    ("Equalize", 0.0, 1.0), ("Identity", 0.0, 1.0), ("Posterize", 4.0, 8.0), ("Rotate", -30.0, 30.0),
    ("Sharpness", 0.05, 0.95), ("ShearX", -0.3, 0.3), ("ShearY", -0.3, 0.3), ("Solarize", 0.0, 256.0),
    ("TranslateX", -0.3, 0.3), ("TranslateY", -0.3, 0.3),
)
OP_INDEX = {name: i for i, (name, _, _) in enumerate(OPS)}
CUTOUT_FILL = (125, 123, 114)
CUTOUT_MAX = 0.5  # side as a fraction of the width

LUT_OPS = ("AutoContrast", "Equalize", "Identity", "Posterize", "Solarize")
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
ENHANCE_OPS = ("Brightness", "Color", "Contrast", "Sharpness")


class Constants(NamedTuple):
    lo: torch.Tensor  # the operations' magnitude ranges, float64 (14,)
    hi: torch.Tensor
    fill: torch.Tensor  # Cutout's colour, uint8 (1, C, 1, 1)
    smooth: torch.Tensor  # PIL's SMOOTH kernel for a grouped convolution, float32 (C, 1, 3, 3)


_CONSTANTS: Dict[Tuple[str, int], Constants] = {}


def constants(device: torch.device, channels: int) -> Constants:
    """The tables of the operations, copied to ``device`` once per process: a host-to-device copy per batch would
    make the CUDA host wait."""
    key = (str(device), channels)
    if key not in _CONSTANTS:
        lo = torch.tensor([o[1] for o in OPS], dtype=torch.float64, device=device)
        hi = torch.tensor([o[2] for o in OPS], dtype=torch.float64, device=device)
        fill = CUTOUT_FILL if channels == 3 else (CUTOUT_FILL[0],) * channels
        kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=device) / 13.0
        _CONSTANTS[key] = Constants(lo, hi, torch.tensor(fill, dtype=torch.uint8, device=device).view(1, -1, 1, 1),
                                    kernel.expand(channels, 1, 3, 3).contiguous())
    return _CONSTANTS[key]


def _is(op: torch.Tensor, name: str) -> torch.Tensor:
    return op == OP_INDEX[name]


def luma(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert('L')`` of uint8 RGB (ITU-R 601-2 in 16-bit fixed point, rounded) as int64 (B, 1, H, W);
    a one-channel image is its own luma."""
    x = x.long()
    if x.shape[1] == 1:
        return x
    return (x[:, 0:1] * 19595 + x[:, 1:2] * 38470 + x[:, 2:3] * 7471 + 0x8000) >> 16


def histograms(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel, the 256-bin histogram of uint8 values: (B, C, 256) int64."""
    B, C = x.shape[:2]
    flat = x.reshape(B * C, -1).long()
    h = torch.zeros(B * C, 256, dtype=torch.long, device=x.device)
    h.scatter_add_(1, flat, torch.ones_like(flat))
    return h.view(B, C, 256)


def autocontrast_lut(hist: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast`` (cutoff 0): each channel's [min, max] stretched to [0, 255]; a flat channel is
    left as it is. Computed in float64 as PIL's Python code computes it."""
    levels = torch.arange(256, device=hist.device)
    present = hist > 0
    lo = torch.where(present, levels, 256).amin(dim=-1, keepdim=True)
    hi = torch.where(present, levels, -1).amax(dim=-1, keepdim=True)
    scale = 255.0 / (hi - lo).clamp_min(1).double()
    stretched = (levels.double() * scale - lo.double() * scale).trunc().clamp(0, 255).long()
    return torch.where(hi > lo, stretched, levels.expand_as(stretched))


def equalize_lut(hist: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize``: ``step = (n - count of the last used level) // 255``; level i maps to
    ``(step // 2 + pixels below i) // step``; identity where fewer than two levels are used or step is 0."""
    levels = torch.arange(256, device=hist.device)
    total = hist.sum(dim=-1, keepdim=True)
    last = torch.where(hist > 0, levels, -1).amax(dim=-1, keepdim=True)
    last_count = hist.gather(-1, last.clamp_min(0))
    step = (total - last_count) // 255
    below = torch.cumsum(hist, dim=-1) - hist
    mapped = ((step // 2 + below) // step.clamp_min(1)).clamp(0, 255)
    used = (hist > 0).sum(dim=-1, keepdim=True)
    return torch.where((used > 1) & (step > 0), mapped, levels.expand_as(mapped))


def lookup(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Apply a per-image, per-channel table (B, C, 256) to uint8 x."""
    B, C, H, W = x.shape
    return lut.gather(2, x.reshape(B, C, H * W).long()).view(B, C, H, W).to(torch.uint8)


def apply_lut_ops(x: torch.Tensor, op: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    B, C = x.shape[:2]
    levels = torch.arange(256, device=x.device).expand(B, C, 256)
    hist = histograms(x)
    row = lambda t: t.view(B, 1, 1)  # noqa: E731 - per-image scalar against (B, C, 256)
    bits = v.floor().clamp(1, 8).long()  # Posterize: max(1, int(v))
    keep = (255 - ((1 << (8 - bits)) - 1))
    posterized = levels & row(keep)
    solarized = torch.where(levels < row(v), levels, 255 - levels)
    lut = torch.where(row(_is(op, "AutoContrast")), autocontrast_lut(hist), levels)
    lut = torch.where(row(_is(op, "Equalize")), equalize_lut(hist), lut)
    lut = torch.where(row(_is(op, "Posterize")), posterized, lut)
    lut = torch.where(row(_is(op, "Solarize")), solarized, lut)
    return lookup(x, lut)


def affine_matrices(op: torch.Tensor, v: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, 6) inverse maps ``(a, b, c, d, e, f)``: output pixel centre (x, y) reads input ``(a x + b y + c,
    d x + e y + f)``, as PIL's ``Image.transform(AFFINE)`` and ``Image.rotate`` (about the centre, counter-clockwise,
    no expand) define them; the identity for images whose operation is not geometric."""
    v = v.double()
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    m = torch.stack([one, zero, zero, zero, one, zero], dim=1)
    shear_x = torch.stack([one, v, zero, zero, one, zero], dim=1)
    shear_y = torch.stack([one, zero, zero, v, one, zero], dim=1)
    translate_x = torch.stack([one, zero, v * W, zero, one, zero], dim=1)
    translate_y = torch.stack([one, zero, zero, zero, one, v * H], dim=1)
    # Image.rotate: angle mod 360, matrix entries rounded to 15 decimals, centre (W/2, H/2)
    theta = -torch.deg2rad(torch.remainder(v, 360.0))
    cos, sin = torch.round(torch.cos(theta), decimals=15), torch.round(torch.sin(theta), decimals=15)
    cx, cy = W / 2.0, H / 2.0
    rotate = torch.stack([cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy], dim=1)
    for name, mat in (("ShearX", shear_x), ("ShearY", shear_y), ("TranslateX", translate_x),
                      ("TranslateY", translate_y), ("Rotate", rotate)):
        m = torch.where(_is(op, name)[:, None], mat, m)
    return m


def apply_affine(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour affine resampling with PIL's pixel-centre convention and black outside the image."""
    B, C, H, W = x.shape
    dev = x.device
    ys = torch.arange(H, device=dev, dtype=torch.float64).view(1, H, 1) + 0.5
    xs = torch.arange(W, device=dev, dtype=torch.float64).view(1, 1, W) + 0.5
    a, b, c, d, e, f = (m[:, i].view(B, 1, 1) for i in range(6))
    src_x = torch.floor(a * xs + b * ys + c).long()
    src_y = torch.floor(d * xs + e * ys + f).long()
    inside = (src_x >= 0) & (src_x < W) & (src_y >= 0) & (src_y < H)
    flat = (src_y.clamp(0, H - 1) * W + src_x.clamp(0, W - 1)).view(B, 1, H * W).expand(B, C, H * W)
    out = x.reshape(B, C, H * W).gather(2, flat).view(B, C, H, W)
    return torch.where(inside[:, None], out, torch.zeros_like(out))


def smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageFilter.SMOOTH`` (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1 over 13, rounded), border pixels unchanged."""
    C = x.shape[1]
    inner = F.conv2d(x.float(), constants(x.device, C).smooth, groups=C)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = torch.floor(inner + 0.5).clamp(0, 255).to(torch.uint8)
    return out


def apply_enhance_ops(x: torch.Tensor, op: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    gray = luma(x)
    mean = gray.double().mean(dim=(1, 2, 3), keepdim=True)  # ImageStat's mean of the L histogram
    contrast = torch.floor(mean + 0.5).expand(B, C, H, W)
    sel = lambda name: _is(op, name).view(B, 1, 1, 1)  # noqa: E731
    degenerate = torch.zeros_like(x, dtype=torch.float32)
    degenerate = torch.where(sel("Color"), gray.expand(B, C, H, W).float(), degenerate)
    degenerate = torch.where(sel("Contrast"), contrast.float(), degenerate)
    degenerate = torch.where(sel("Sharpness"), smooth(x).float(), degenerate)
    # Image.blend in float32: degenerate + v * (image - degenerate), clipped, truncated
    blended = degenerate + v.float().view(B, 1, 1, 1) * (x.float() - degenerate)
    return blended.clamp(0, 255).floor().to(torch.uint8)


def cutout(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The reference's CutoutAbs with side ``U(0, 0.5) * W`` per image (see the module docstring)."""
    B, C, H, W = x.shape
    dev = x.device
    side = torch.rand(B, generator=g, device=dev, dtype=torch.float64) * CUTOUT_MAX * W
    cx = W + (1.0 - W) * torch.rand(B, generator=g, device=dev, dtype=torch.float64)
    cy = H + (1.0 - H) * torch.rand(B, generator=g, device=dev, dtype=torch.float64)
    x0 = (cx - side / 2.0).clamp_min(0).floor()
    y0 = (cy - side / 2.0).clamp_min(0).floor()
    x1 = torch.minimum(x0 + side, torch.full_like(x0, W)).floor()
    y1 = torch.minimum(y0 + side, torch.full_like(y0, H)).floor()
    cols = torch.arange(W, device=dev, dtype=torch.float64).view(1, 1, W)
    rows = torch.arange(H, device=dev, dtype=torch.float64).view(1, H, 1)
    box = ((cols >= x0.view(B, 1, 1)) & (cols <= x1.view(B, 1, 1))
           & (rows >= y0.view(B, 1, 1)) & (rows <= y1.view(B, 1, 1)))
    return torch.where(box[:, None], constants(dev, C).fill, x)


def apply_op(x: torch.Tensor, op: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Image b gets operation ``op[b]`` (an index into :data:`OPS`) with magnitude ``v[b]``."""
    H, W = x.shape[-2:]
    out = apply_lut_ops(x, op, v)
    geometric = apply_affine(x, affine_matrices(op, v, H, W))
    enhanced = apply_enhance_ops(x, op, v)
    is_geometric = torch.zeros_like(op, dtype=torch.bool)
    for name in GEOMETRIC_OPS:
        is_geometric |= _is(op, name)
    is_enhance = torch.zeros_like(is_geometric)
    for name in ENHANCE_OPS:
        is_enhance |= _is(op, name)
    out = torch.where(is_geometric.view(-1, 1, 1, 1), geometric, out)
    return torch.where(is_enhance.view(-1, 1, 1, 1), enhanced, out)


def rand_augment(x: torch.Tensor, g: torch.Generator, n: int = 2) -> torch.Tensor:
    """MLKD's strong augmentation of a uint8 (B, C, H, W) batch: ``n`` random operations per image, then Cutout."""
    if x.dtype != torch.uint8:
        raise ValueError("rand_augment expects uint8 images")
    B, C = x.shape[:2]
    dev = x.device
    lo, hi = constants(dev, C)[:2]
    for _ in range(n):
        op = torch.randint(0, len(OPS), (B,), generator=g, device=dev)
        u = torch.rand(B, generator=g, device=dev, dtype=torch.float64)
        x = apply_op(x, op, lo[op] + (hi[op] - lo[op]) * u)
    return cutout(x, g)

