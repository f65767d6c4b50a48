"""Fuse a trained re-parameterisable model into its deploy form (KDrefine's convert.py CLI).

    python convert.py --arch represnet20 --blocktype AMBB --load save/student_model/represnet20_last.pth \
        --save save/student_model/represnet20_deploy.pth

Every AMBB block becomes one biased k x k conv and every ConvBN one biased conv (BN folded in, running
statistics), so the deploy model computes what the trained one computes in eval mode. The input may be a
checkpoint with a 'model' or 'state_dict' entry or a plain state dict ('module.' prefixes are stripped), or an
``.hdf5``/``.h5`` file holding one data set per state-dict key. The output is ``{'model': fused_state_dict}``,
written atomically; evaluate it with ``validation.py --model <arch> --blocktype AMBB --deploy_flag True``.
"""
from __future__ import annotations

import argparse

from assembly.deploy import convert
from assembly.options import DEBUG
from helper.run import run_cli
from models.ambb import normalize_block_type


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("fuse the re-parameterisable blocks of a trained model")
    p.add_argument("--load", type=str, required=True, help="trained checkpoint (.pth) or .hdf5 weights")
    p.add_argument("--save", type=str, required=True, help="where to write the deploy checkpoint")
    p.add_argument("-a", "--arch", type=str, default="repvgg8", help="architecture name (models.model_dict)")
    p.add_argument("-t", "--blocktype", type=str, default="AMBB", help="AMBB (alias ACTDB) or base")
    p.add_argument("--num_classes", type=int, default=None,
                   help="classes of the classifier (default: read from the checkpoint, else 100)")
    DEBUG.add_to(p)
    return p


def main(argv=None):
    opt = parser().parse_args(argv)
    block_type = normalize_block_type(opt.blocktype)
    res = convert(opt.arch, opt.load, opt.save, block_type, opt.num_classes)
    print(f"{opt.arch}: {res['params_before']:,} parameters -> {res['params_after']:,} after fusion; "
          f"on a random batch max |unfused - fused| = {res['max_abs_diff']:.3g} for outputs up to "
          f"{res['max_abs_output']:.3g}; wrote '{opt.save}'")
    return res


if __name__ == "__main__":
    run_cli(main)
