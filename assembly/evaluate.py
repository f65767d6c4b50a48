"""validation.py's evaluation of a checkpoint on the test split (options default from the checkpoint's)."""
from __future__ import annotations

import argparse
from typing import Optional, Tuple

from dataset import NORMALIZATIONS, FolderSettings, available_datasets, build_dataset, input_family, \
    set_normalization
from dataset.folder import FORMATS
from engine.evaluate import EvalSettings, validate
from helper.checkpoint import load_checkpoint, load_weights
from helper.multihead import is_multi_exit
from helper.option import str2bool
from helper.run import place_model
from helper.util import select_device
from models.ambb import normalize_block_type
from models.multi_resnet import BYOT_MODELS, drop_unused_downsample

from .deploy import build_for_state_dict, deployed_network, is_deployed, read_weights
from .options import DEBUG


def parser():
    p = argparse.ArgumentParser("evaluate a checkpoint")
    p.add_argument("--model", type=str, required=True, help="architecture name (see models.model_dict)")
    p.add_argument("--model_path", type=str, required=True,
                   help="checkpoint holding 'model', 'state_dict' or a plain state dict (or .hdf5 weights)")
    p.add_argument("--dataset", type=str, default=None, choices=available_datasets(),
                   help="default: the data set the checkpoint was trained on, else cifar100")
    p.add_argument("--data_root", type=str, default="./data")
    p.add_argument("--data_format", type=str, default=None, choices=list(FORMATS),
                   help="imagenet/tiny_imagenet: folder or webdataset (default: the checkpoint's, else folder)")
    p.add_argument("--crop_size", type=int, default=None,
                   help="folder data sets: evaluation crop (default: the checkpoint's, else the data set's)")
    p.add_argument("--resize_size", type=int, default=None,
                   help="folder data sets: shorter side before the centre crop (default: the checkpoint's, else "
                        "the data set's)")
    p.add_argument("--num_workers", type=int, default=8, help="DataLoader workers of a folder data set")
    p.add_argument("--batch_size", type=int, default=256, dest="test_batch_size")
    p.add_argument("--device", type=str, default="auto")
    p.add_argument("-t", "--blocktype", type=str, default="AMBB",
                   help="conv+BN block of rep* models: AMBB (alias ACTDB) or base")
    p.add_argument("--deploy_flag", type=str2bool, default=None,
                   help="True: fused (deploy) rep* model, False: training-time form; default: from the keys")
    p.add_argument("--block_depth", type=str, default=None,
                   help="blocks per stage of a my* model, e.g. 3,7,2 (default: the checkpoint's, else nominal)")
    p.add_argument("--data_norm", type=str, default=None, choices=sorted(NORMALIZATIONS),
                   help="input normalisation (default: the one the checkpoint was trained with, else the data set's)")
    DEBUG.add_to(p)
    return p


def stored_entries(path: str) -> Tuple[dict, Optional[dict]]:
    """The options a toolkit checkpoint was trained with and its ``deploy`` entry (how a method such as SimKD
    deploys more than the student); ({}, None) for other files, which carry neither."""
    try:
        state = load_checkpoint(path)
    except (ValueError, OSError):
        return {}, None
    if not isinstance(state, dict):
        return {}, None
    opts, deploy = state.get("opt"), state.get("deploy")
    return (opts if isinstance(opts, dict) else {}), (deploy if isinstance(deploy, dict) else None)


def evaluate_checkpoint(opt):
    """Build the model that fits ``opt.model_path``, load it and score it; prints one line (and every exit's)."""
    device = select_device(opt.device)
    block_type = normalize_block_type(opt.blocktype)
    stored, deploy = stored_entries(opt.model_path)
    dataset = opt.dataset or stored.get("dataset") or "cifar100"
    block_depth = opt.block_depth if opt.block_depth is not None else stored.get("block_depth")
    sd = read_weights(opt.model_path)
    settings = FolderSettings(data_format=opt.data_format or stored.get("data_format") or "folder",
                              pipeline="dataloader", num_workers=opt.num_workers,
                              crop_size=opt.crop_size or stored.get("crop_size"),
                              resize_size=opt.resize_size or stored.get("resize_size"))
    data = build_dataset(dataset, opt.data_root, device, settings)
    set_normalization(data, opt.data_norm or stored.get("data_norm"))
    if opt.model in BYOT_MODELS:
        sd = drop_unused_downsample(sd)
    model = build_for_state_dict(opt.model, data.num_classes, sd, block_type=block_type, deploy=opt.deploy_flag,
                                 block_depth=block_depth, family=input_family(dataset))
    try:
        load_weights(model, sd, opt.model, source=f"'{opt.model_path}'")
    except ValueError as exc:
        if model.block_depth is None:
            raise
        # my* models of one name differ only in their blocks per stage, which only the training run knew
        raise ValueError(f"{exc} A {opt.model} built with --block_depth "
                         f"{','.join(str(d) for d in model.block_depth)}: give the --block_depth it was trained "
                         "with.") from None
    # a run that deploys more than the student (SimKD: its projector and the teacher's classifier) is scored as that
    model = place_model(deployed_network(model, deploy, f"'{opt.model_path}'"), device)
    res = validate(model, data.test, EvalSettings(test_batch_size=opt.test_batch_size), device)
    res["params"] = sum(p.numel() for p in model.parameters())
    res["deploy"] = is_deployed(model)
    form = " (deploy form)" if res["deploy"] else ""
    if deploy is not None:
        form += f" as deployed by --distill {deploy['method']}"
    print(f"{opt.model}{form}, {res['params']:,} parameters, on {dataset} test ({len(data.test)} images): "
          f"top-1 {res['acc']:.2f}  top-5 {res['acc_top5']:.2f}  loss {res['loss']:.4f}")
    if is_multi_exit(model):
        n = sum(1 for k in res if k.startswith("acc_c"))
        print("  ".join(f"classifier {k}/{n} {res[f'acc_c{k}']:.2f}" for k in range(1, n + 1))
              + f"  ensemble {res['acc_ensemble']:.2f}")
    return res

