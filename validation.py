"""Evaluate a checkpoint on the test split: top-1 / top-5.

    python validation.py --model resnet32x4 --model_path save/models/resnet32x4_vanilla/ckpt_epoch_240.pth
    python validation.py --model represnet20 --model_path save/student_model/represnet20_deploy.pth \
        --blocktype AMBB --deploy_flag True

Re-parameterisable models (represnet*, repvgg8, repmobilenetv2) are built with ``--blocktype`` and in the
form ``--deploy_flag`` names: True for a file written by convert.py, False for a training checkpoint. Left
out, the form is read from the checkpoint's keys (KDrefine defaulted to True). ``my*`` models take
``--block_depth``.
"""
from __future__ import annotations

import argparse
import sys

from convert import build_for_state_dict, is_deployed, read_weights
from dataset import build_dataset
from helper.checkpoint import load_weights
from helper.loops import validate
from helper.options import str2bool
from helper.run import place_model
from helper.util import select_device
from models.ambb import normalize_block_type


def parser():
    p = argparse.ArgumentParser("evaluate a checkpoint")
    p.add_argument("--model", type=str, required=True, help="architecture name (see models.model_dict)")
    p.add_argument("--model_path", type=str, required=True,
                   help="checkpoint holding 'model', 'state_dict' or a plain state dict (or .hdf5 weights)")
    p.add_argument("--dataset", type=str, default="cifar100", choices=["cifar100", "cifar10", "digits"])
    p.add_argument("--data_root", type=str, default="./data")
    p.add_argument("--batch_size", type=int, default=256, dest="test_batch_size")
    p.add_argument("--device", type=str, default="auto")
    p.add_argument("-t", "--blocktype", type=str, default="AMBB",
                   help="conv+BN block of rep* models: AMBB (alias ACTDB) or base")
    p.add_argument("--deploy_flag", type=str2bool, default=None,
                   help="True: fused (deploy) rep* model, False: training-time form; default: from the keys")
    p.add_argument("--block_depth", type=str, default=None, help="blocks per stage of a my* model, e.g. 3,7,2")
    return p


def main(argv=None):
    opt = parser().parse_args(argv)
    device = select_device(opt.device)
    block_type = normalize_block_type(opt.blocktype)
    data = build_dataset(opt.dataset, opt.data_root, device)
    sd = read_weights(opt.model_path)
    model = build_for_state_dict(opt.model, data.num_classes, sd, block_type=block_type, deploy=opt.deploy_flag,
                                 block_depth=opt.block_depth)
    load_weights(model, sd, opt.model, source=f"'{opt.model_path}'")
    model = place_model(model, device)
    res = validate(model, data.test, opt, device)
    res["params"] = sum(p.numel() for p in model.parameters())
    res["deploy"] = is_deployed(model)
    form = " (deploy form)" if res["deploy"] else ""
    print(f"{opt.model}{form}, {res['params']:,} parameters, on {opt.dataset} test ({len(data.test)} images): "
          f"top-1 {res['acc']:.2f}  top-5 {res['acc_top5']:.2f}  loss {res['loss']:.4f}")
    return res


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
