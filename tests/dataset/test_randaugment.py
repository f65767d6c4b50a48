"""MLKD's strong augmentation on the device equals the reference's PIL operations, image for image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from dataset.core import epoch_generator
from dataset.randaugment import (CUTOUT_FILL, ENHANCE_OPS, GEOMETRIC_OPS, LUT_OPS, OP_INDEX, OPS, apply_op, cutout,
                                 rand_augment)


def pil_op(img: Image.Image, name: str, v: float) -> Image.Image:
    """The reference's operation with magnitude v (FixMatch-style RandAugment, as MLKD's spec section lists it)."""
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Brightness":
        return ImageEnhance.Brightness(img).enhance(v)
    if name == "Color":
        return ImageEnhance.Color(img).enhance(v)
    if name == "Contrast":
        return ImageEnhance.Contrast(img).enhance(v)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Identity":
        return img
    if name == "Posterize":
        return ImageOps.posterize(img, max(1, int(v)))
    if name == "Rotate":
        return img.rotate(v)
    if name == "Sharpness":
        return ImageEnhance.Sharpness(img).enhance(v)
    if name == "ShearX":
        return img.transform(img.size, Image.Transform.AFFINE, (1, v, 0, 0, 1, 0))
    if name == "ShearY":
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, v, 1, 0))
    if name == "Solarize":
        return ImageOps.solarize(img, v)
    if name == "TranslateX":
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, v * img.size[0], 0, 1, 0))
    if name == "TranslateY":
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, v * img.size[1]))
    raise KeyError(name)


def images(n=6, size=32, seed=0) -> torch.Tensor:
    """Random images with structure (smooth gradients, a black padded border on some, a flat one, a two-level one)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    ramp = torch.linspace(30, 220, size).round().to(torch.uint8)
    x[1] = ramp.view(1, 1, size).expand(3, size, size)
    x[2, :, :4] = 0  # the zero padding a random crop leaves
    x[2, :, :, -3:] = 0
    x[3] = 77  # flat: autocontrast and equalize leave it
    x[4] = torch.where(torch.rand(size, size, generator=g) < 0.3, 10, 200).to(torch.uint8)
    return x


def to_pil(t: torch.Tensor) -> Image.Image:
    return Image.fromarray(t.permute(1, 2, 0).numpy())


def from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


MAGNITUDES = {name: [lo + (hi - lo) * f for f in (0.03, 0.41, 0.77, 0.98)] for name, lo, hi in OPS}


def test_every_operation_belongs_to_exactly_one_kind():
    kinds = [set(LUT_OPS), set(GEOMETRIC_OPS), set(ENHANCE_OPS)]
    assert sum(len(k) for k in kinds) == len(OPS) == 14
    assert set().union(*kinds) == set(OP_INDEX)


@pytest.mark.parametrize("name", [o[0] for o in OPS])
def test_operation_matches_pil(name):
    x = images()
    for v in MAGNITUDES[name]:
        op = torch.full((x.shape[0],), OP_INDEX[name])
        got = apply_op(x, op, torch.full((x.shape[0],), v, dtype=torch.float64))
        for b in range(x.shape[0]):
            want = from_pil(pil_op(to_pil(x[b]), name, v))
            diff = (got[b].int() - want.int()).abs()
            assert diff.max().item() == 0, (name, v, b, int((diff > 0).sum()))


def test_each_image_gets_its_own_operation_and_magnitude():
    x = images(n=5)
    names = ["Rotate", "Solarize", "Sharpness", "Equalize", "TranslateY"]
    vs = [12.5, 100.0, 0.3, 0.0, -0.2]
    op = torch.tensor([OP_INDEX[n] for n in names])
    got = apply_op(x, op, torch.tensor(vs, dtype=torch.float64))
    for b, (name, v) in enumerate(zip(names, vs)):
        assert torch.equal(got[b], from_pil(pil_op(to_pil(x[b]), name, v))), name


def pil_cutout(img: Image.Image, side: float, cx: float, cy: float) -> Image.Image:
    x0, y0 = int(max(0, cx - side / 2.0)), int(max(0, cy - side / 2.0))
    x1, y1 = int(min(img.size[0], x0 + side)), int(min(img.size[1], y0 + side))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), CUTOUT_FILL)
    return img


def test_cutout_matches_the_references_rectangle_with_its_draws():
    x = images(n=8)
    g = torch.Generator().manual_seed(5)
    got = cutout(x, g)
    # the same draws, in cutout's order: side fractions, then centres uniform(low=W, high=1)
    g = torch.Generator().manual_seed(5)
    side = torch.rand(8, generator=g, dtype=torch.float64) * 0.5 * 32
    cx = 32 + (1 - 32) * torch.rand(8, generator=g, dtype=torch.float64)
    cy = 32 + (1 - 32) * torch.rand(8, generator=g, dtype=torch.float64)
    assert bool(((cx > 1) & (cx <= 32)).all())
    for b in range(8):
        want = from_pil(pil_cutout(to_pil(x[b]), float(side[b]), float(cx[b]), float(cy[b])))
        assert torch.equal(got[b], want), b
    filled = (got == torch.tensor(CUTOUT_FILL, dtype=torch.uint8).view(1, 3, 1, 1)).all(dim=1)
    assert bool(filled.flatten(1).any(dim=1).all())  # every image has a patch, at least its corner pixel


def test_strong_view_depends_only_on_the_generator_state():
    x = images(n=16)
    a = rand_augment(x, epoch_generator(3, 2, torch.device("cpu")))
    b = rand_augment(x, epoch_generator(3, 2, torch.device("cpu")))
    c = rand_augment(x, epoch_generator(3, 3, torch.device("cpu")))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_rand_augment_refuses_float_images():
    with pytest.raises(ValueError, match="uint8"):
        rand_augment(torch.zeros(1, 3, 8, 8), torch.Generator())
