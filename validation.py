"""Evaluate a checkpoint on the test split: top-1 / top-5.

    python validation.py --model resnet32x4 --model_path save/models/resnet32x4_vanilla/ckpt_epoch_240.pth
    python validation.py --model represnet20 --model_path save/student_model/represnet20_deploy.pth \
        --blocktype AMBB --deploy_flag True

Re-parameterisable models (represnet*, repvgg8, repmobilenetv2) are built with ``--blocktype`` and in the
form ``--deploy_flag`` names: True for a file written by convert.py, False for a training checkpoint. Left
out, the form is read from the checkpoint's keys (KDrefine defaulted to True). ``my*`` models take
``--block_depth``.

Multi-exit models (BYOT's ``multi_resnet18_kd``/``multi_resnet50_kd``) report every classifier and the
ensemble of all (mean of their softmax outputs); the top-1 line is the deepest classifier:

    python validation.py --model multi_resnet18_kd \
        --model_path save/student_model/S_multi_resnet18_kd_T_self_.../multi_resnet18_kd_best.pth

``--data_norm`` defaults to the normalisation stored in the checkpoint's options (``byot`` for BYOT runs), else
the data set's own; a file trained with the BYOT reference code needs ``--data_norm byot`` and loads without its
unused ``downsample*_1`` modules.
"""
from __future__ import annotations

import argparse

from convert import build_for_state_dict, is_deployed, read_weights
from dataset import build_dataset
from helper.checkpoint import load_checkpoint, load_weights
from helper.loops import validate
from helper.multihead import is_multi_exit
from helper.options import str2bool
from helper.recipe import NORMALIZATIONS, set_normalization
from helper.run import place_model, run_cli
from helper.util import select_device
from models.ambb import normalize_block_type
from models.multi_resnet import BYOT_MODELS, drop_unused_downsample


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
    p.add_argument("--data_norm", type=str, default=None, choices=sorted(NORMALIZATIONS),
                   help="input normalisation (default: the one the checkpoint was trained with, else the data set's)")
    return p


def stored_data_norm(path: str):
    """The ``--data_norm`` a toolkit checkpoint was trained with (None for other files)."""
    try:
        state = load_checkpoint(path)
    except (ValueError, FileNotFoundError):
        return None
    opts = state.get("opt") if isinstance(state, dict) else None
    return opts.get("data_norm") if isinstance(opts, dict) else None


def main(argv=None):
    opt = parser().parse_args(argv)
    device = select_device(opt.device)
    block_type = normalize_block_type(opt.blocktype)
    data = build_dataset(opt.dataset, opt.data_root, device)
    sd = read_weights(opt.model_path)
    set_normalization(data, opt.data_norm or stored_data_norm(opt.model_path))
    if opt.model in BYOT_MODELS:
        sd = drop_unused_downsample(sd)
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
    if is_multi_exit(model):
        n = sum(1 for k in res if k.startswith("acc_c"))
        print("  ".join(f"classifier {k}/{n} {res[f'acc_c{k}']:.2f}" for k in range(1, n + 1))
              + f"  ensemble {res['acc_ensemble']:.2f}")
    return res


if __name__ == "__main__":
    run_cli(main)
