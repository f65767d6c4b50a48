"""Evaluate a checkpoint on the test split: top-1 / top-5.

    python validation.py --model resnet32x4 --model_path save/models/resnet32x4_vanilla/ckpt_epoch_240.pth
"""
from __future__ import annotations

import argparse
import sys

from dataset import build_dataset
from helper.checkpoint import load_checkpoint, load_weights
from helper.loops import validate
from helper.run import place_model
from helper.util import select_device
from models import build_model


def parser():
    p = argparse.ArgumentParser("evaluate a checkpoint")
    p.add_argument("--model", type=str, required=True, help="architecture name (see models.model_dict)")
    p.add_argument("--model_path", type=str, required=True,
                   help="checkpoint holding 'model', 'state_dict' or a plain state dict")
    p.add_argument("--dataset", type=str, default="cifar100", choices=["cifar100", "cifar10", "digits"])
    p.add_argument("--data_root", type=str, default="./data")
    p.add_argument("--batch_size", type=int, default=256, dest="test_batch_size")
    p.add_argument("--device", type=str, default="auto")
    return p


def main(argv=None):
    opt = parser().parse_args(argv)
    device = select_device(opt.device)
    data = build_dataset(opt.dataset, opt.data_root, device)
    model = build_model(opt.model, num_classes=data.num_classes)
    load_weights(model, load_checkpoint(opt.model_path), opt.model, source=f"'{opt.model_path}'")
    model = place_model(model, device)
    res = validate(model, data.test, opt, device)
    print(f"{opt.model} on {opt.dataset} test ({len(data.test)} images): "
          f"top-1 {res['acc']:.2f}  top-5 {res['acc_top5']:.2f}  loss {res['loss']:.4f}")
    return res


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
