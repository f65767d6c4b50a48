"""Command-line options: RepDistiller's flag names and defaults, plus this toolkit's additions."""
from __future__ import annotations

import argparse
import math
import os
import re

from .recipe import NORMALIZATIONS
from .util import default_learning_rate, unknown_device


def str2bool(text) -> bool:
    """A real boolean for flags written ``--flag True``/``--flag False`` (argparse's bool() is truthy)."""
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got '{text}'")


def add_common_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("RepDistiller options")
    g.add_argument("--print_freq", type=int, default=100,
                   help="accepted for compatibility (unused: the progress bar counts steps, and the loss is "
                        "printed once per epoch, since reading it every few steps would stall the GPU)")
    g.add_argument("--tb_freq", type=int, default=500, help="accepted for compatibility (unused, as upstream)")
    g.add_argument("--save_freq", type=int, default=40, help="save ckpt_epoch_N.pth every N epochs")
    g.add_argument("--batch_size", type=int, default=64)
    g.add_argument("--num_workers", type=int, default=8,
                   help="accepted for compatibility; in-memory data sets need no workers")
    g.add_argument("--epochs", type=int, default=240)
    g.add_argument("--learning_rate", type=float, default=None,
                   help="default 0.05, or 0.01 for MobileNetV2/ShuffleV1/ShuffleV2 (RepDistiller)")
    g.add_argument("--lr_decay_epochs", type=str, default="150,180,210")
    g.add_argument("--lr_decay_rate", type=float, default=0.1)
    g.add_argument("--weight_decay", type=float, default=5e-4)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", type=str2bool, nargs="?", const=True, default=False,
                   help="Nesterov momentum (CheckpointKD's SGD; RepDistiller uses plain momentum)")
    g.add_argument("--dataset", type=str, default="cifar100", choices=["cifar100", "cifar10", "digits"])
    g.add_argument("--data_norm", type=str, default="default", choices=sorted(NORMALIZATIONS),
                   help="input mean/std: the data set's own (default), or a preset such as 'byot' (the CIFAR-10 "
                        "constants BYOT applies to CIFAR-100)")
    t = p.add_argument_group("toolkit options")
    t.add_argument("--data_root", type=str, default="./data", help="folder holding cifar-100-python/ etc.")
    t.add_argument("--save_dir", type=str, default="./save", help="root of the output folders")
    t.add_argument("--seed", type=int, default=0, help="seeds every RNG (init, shuffling, augmentation)")
    t.add_argument("--device", type=str, default="auto", help="cuda, cpu or auto (CUDA when available)")
    t.add_argument("--data_seed", type=int, default=None,
                   help="seed of the shuffling and augmentation (default: --seed); --trials shares it")
    t.add_argument("--amp", type=str2bool, nargs="?", const=True, default=False,
                   help="bf16 autocast of the forward passes (CUDA, or a CPU with bf16 support); off by default "
                        "until its accuracy is measured on a GPU (README, Speed)")
    t.add_argument("--channels_last", type=str2bool, nargs="?", const=True, default=None,
                   help="channels-last memory format for networks and inputs (default: on CUDA only, so that the "
                        "fp32 CPU path stays bit for bit the reference one; on a CPU it is ~10%% faster)")
    t.add_argument("--tf32", type=str2bool, nargs="?", const=True, default=True,
                   help="on CUDA, let float32 matmuls and convolutions (networks and losses alike) use TF32 "
                        "tensor cores: 10-bit mantissa products, float32 range and accumulation, several times "
                        "faster on Ampere and newer GPUs (PyTorch allows it for convolutions only by default). "
                        "--tf32 0: full float32 products everywhere. No effect on a CPU")
    t.add_argument("--compile", type=str2bool, nargs="?", const=True, default=False,
                   help="torch.compile the networks (one static graph per batch shape: the last partial batch is "
                        "compiled once, not every epoch)")
    t.add_argument("--compile_mode", type=str, default="auto",
                   choices=["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="torch.compile mode; auto: reduce-overhead (CUDA graphs) on one CUDA device, else default")
    d = p.add_argument_group("several processes (torchrun --nproc_per_node=K ...)")
    d.add_argument("--sync_bn", type=str2bool, nargs="?", const=True, default=False,
                   help="BatchNorm statistics over the global batch (all processes) instead of each local batch")
    d.add_argument("--lr_scale", type=str, default="linear", choices=["linear", "none"],
                   help="--batch_size is per process; linear: lr x K for the K-times larger global batch "
                        "(Goyal et al. 2017), none: lr as given")
    t.add_argument("--resume", type=str, default=None,
                   help="checkpoint to continue from, or 'auto' for the run folder's latest")
    t.add_argument("--test_batch_size", type=int, default=256, help="batch size for evaluation")
    add_debug_flag(t)
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that already holds a run (its checkpoints, metrics and "
                        "summary are removed first); without it such a folder is refused unless --resume is given")
    t.add_argument("--keep_checkpoints", type=str, default="all", choices=["all", "last"],
                   help="all: also keep ckpt_epoch_N.pth every --save_freq epochs; last: only <model>_last.pth and "
                        "<model>_best.pth (saves disk in sweeps; a CRD checkpoint is ~50 MB)")


def add_debug_flag(p) -> None:
    """``--debug``: the entry scripts' error wrapper (helper.run.run_cli) reads it from the command line."""
    p.add_argument("--debug", action="store_true",
                   help="on an error, print the full traceback instead of one line (also: KD_DEBUG=1)")


def check_device_name(name: str) -> None:
    problem = unknown_device(name)
    if problem:
        raise SystemExit(f"error: {problem}")


def check_decay_epochs(text: str) -> None:
    """--lr_decay_epochs is a comma-separated list of epochs (RepDistiller's '150,180,210'); empty: no decay."""
    parts = [p.strip() for p in str(text).split(",")]
    if parts == [""]:
        return
    if not all(re.fullmatch(r"\d+", p) for p in parts):
        raise SystemExit(f"error: --lr_decay_epochs '{text}' must be comma-separated non-negative epochs, "
                         "e.g. 150,180,210")


def check_positive(flag: str, value: float) -> None:
    # written so that nan (which passes any '<= 0' test) and inf are refused too
    if not (value > 0 and math.isfinite(value)):
        raise SystemExit(f"error: {flag} must be a positive number, got {value}")


def _finish(opt, model_name: str) -> None:
    if opt.learning_rate is None:
        opt.learning_rate = default_learning_rate(model_name)
    if opt.epochs < 1:
        raise SystemExit("error: --epochs must be at least 1")
    if opt.batch_size < 1:
        raise SystemExit("error: --batch_size must be at least 1")
    check_positive("--learning_rate", opt.learning_rate)
    if opt.test_batch_size < 1:
        raise SystemExit(f"error: --test_batch_size must be at least 1, got {opt.test_batch_size}")
    check_decay_epochs(opt.lr_decay_epochs)
    check_device_name(opt.device)
    if opt.overwrite and opt.resume:
        raise SystemExit("error: --overwrite starts the run afresh and --resume continues it; give one of them")
    if opt.data_seed is None:
        opt.data_seed = opt.seed
    trials = getattr(opt, "trials", 1)
    if trials < 1:
        raise SystemExit("error: --trials must be at least 1")
    if trials > 1 and opt.resume not in (None, "auto"):
        raise SystemExit("error: with --trials, resume with --resume auto (each trial continues from its own run "
                         "folder); a single checkpoint path names one trial only")


def teacher_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("train a model from scratch (teacher or vanilla student)")
    add_common_args(p)
    p.add_argument("--model", type=str, default="resnet110")
    p.add_argument("-t", "--trial", type=str, default="0", help="the experiment id")
    add_architecture_args(p, short_blocktype=False)
    return p


def add_architecture_args(p: argparse.ArgumentParser, short_blocktype: bool = True) -> None:
    """Options of the KDrefine re-parameterisable models and the EMKD variable-depth models.

    ``-t`` is KDrefine's short form of ``--blocktype``; train_teacher.py keeps ``-t`` for ``--trial``.
    """
    g = p.add_argument_group("architecture options (rep*/my* models; ignored by the others)")
    names = ("-t", "--blocktype") if short_blocktype else ("--blocktype",)
    g.add_argument(*names, dest="blocktype", type=str, default="AMBB",
                   help="conv+BN block of the rep* models: AMBB (alias ACTDB, its older name) or base")
    g.add_argument("--block_depth", type=str, default=None,
                   help="blocks per stage of a my* model, e.g. 3,7,2 (default: the nominal depth)")


def parse_teacher_options(argv=None):
    opt = teacher_parser().parse_args(argv)
    _finish(opt, opt.model)
    opt.model_name = (f"{opt.model}_{opt.dataset}_lr_{opt.learning_rate}_decay_{opt.weight_decay}"
                      f"_trial_{opt.trial}")
    opt.save_folder = os.path.join(opt.save_dir, "models", opt.model_name)
    return opt


def student_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("distill a student from a teacher")
    add_common_args(p)
    p.add_argument("--init_epochs", type=int, default=30, help="init-stage epochs (abound, factor, fsp)")
    p.add_argument("--model_s", type=str, default="resnet8",
                   help="student architecture; comma-separated ones train side by side (with every --distill value)")
    p.add_argument("--path_t", type=str, default=None,
                   help="teacher checkpoint; several comma-separated ones average their logits (CheckpointKD); "
                        "with --teacher_epochs, the teacher's run folder")
    p.add_argument("--model_t", type=str, default=None,
                   help="teacher architecture (default: parsed from the --path_t folder name); comma-separated "
                        "for one per --path_t checkpoint")
    p.add_argument("--distill", type=str, default="kd",
                   help="method; comma-separated ones train side by side in one process, sharing the teacher's "
                        "forward (each run as it would alone)")
    p.add_argument("--trial", type=str, default="1", help="trial id")
    p.add_argument("--trials", type=int, default=1,
                   help="train N students in one process on the same batches, sharing the teacher's forward: "
                        "trial i has --seed seed+i and trial id trial+i (or trial_i), its own run folder, optimizer, "
                        "checkpoints and metrics, and equals a run of its own with that --seed and --trial and "
                        "--data_seed set to this run's")
    p.add_argument("-r", "--gamma", type=float, default=None, help="weight for classification (default 1)")
    p.add_argument("-a", "--alpha", type=float, default=None, help="weight balance for KD")
    p.add_argument("-b", "--beta", type=float, default=None, help="weight balance for other losses")
    p.add_argument("--kd_T", type=float, default=4, help="temperature for KD distillation")
    p.add_argument("--feat_dim", default=128, type=int, help="feature dimension (CRD, CC)")
    p.add_argument("--mode", default="exact", type=str, choices=["exact", "relax"])
    p.add_argument("--nce_k", default=16384, type=int, help="number of negative samples for NCE")
    p.add_argument("--nce_t", default=0.07, type=float, help="temperature parameter for softmax")
    p.add_argument("--nce_m", default=0.5, type=float, help="momentum for non-parametric updates")
    p.add_argument("--hint_layer", default=2, type=int, choices=[0, 1, 2, 3, 4])
    p.add_argument("--dkd_alpha", default=1.0, type=float, help="DKD target-class weight")
    p.add_argument("--dkd_beta", default=8.0, type=float, help="DKD non-target-class weight")
    p.add_argument("--dkd_warmup", default=20, type=int, help="DKD linear warm-up epochs")
    add_architecture_args(p)
    k = p.add_argument_group("KDrefine (--distill kdrefine)")
    k.add_argument("--logit_multiplier", type=float, default=2.0,
                   help="normalised logits are m*(z-mean)/(std+eps); KDrefine uses m=2")
    k.add_argument("--logit_eps", type=float, default=1e-7, help="eps added to the unbiased std")
    e = p.add_argument_group("EMKD milestone checking and evaluation")
    e.add_argument("--mc", type=int, default=0, choices=[0, 1],
                   help="1: add the per-stage feature KL (milestone checking) to the method loss")
    e.add_argument("--mc_weight", type=float, default=0.001, help="weight of milestone checking")
    for i in range(1, 5):
        e.add_argument(f"--B{i}_weight", type=float, default=1.0,
                       help=f"stage-{i} milestone weight for students without block_depth "
                            f"(my* students use nominal/actual depth)")
    e.add_argument("--test", type=int, default=0, choices=[0, 1],
                   help="1: only evaluate a trained student (--path_s, else --path_t as in EMKD) and exit")
    e.add_argument("--path_s", type=str, default=None, help="student checkpoint for --test 1")
    c = p.add_argument_group("CheckpointKD teachers (snapshots and logit ensembles; any --distill method)")
    c.add_argument("--teacher_epochs", type=str, default=None,
                   help="use the ckpt_epoch_N.pth snapshots of these epochs (e.g. 60,120) of the run folder "
                        "--path_t; several are averaged")
    c.add_argument("--teacher_weights", type=str, default=None,
                   help="weights of the teachers' logits, comma-separated (normalised; default uniform)")
    c.add_argument("--teacher_feat_index", type=int, default=0,
                   help="which teacher's features feature-based methods use (default the first)")
    c.add_argument("--teacher_bn", type=str, default="eval", choices=["eval", "train", "train_always"],
                   help="teacher BatchNorm while distilling: eval (running stats), train (CheckpointKD: batch stats "
                        "until its first validation at epoch epochs-9, then eval), train_always")
    c.add_argument("--teacher_scale", type=str2bool, nargs="?", const=True, default=False,
                   help="CheckpointKD's teacher_scale KL: T * KL(softmax(z_t/T) || softmax(z_s)) instead of "
                        "T^2 * KL at temperature T on both sides")
    return p


def resolve_loss_weights(opt, default_weights) -> None:
    """Fill -r/-a/-b that were not given.

    RepDistiller's -r defaults to 1 and -a/-b are mandatory (None crashes its loop). Here a missing
    -a/-b takes the method's value from RepDistiller's run_cifar_distill.sh, and when none of the
    three is given the whole recipe (e.g. kd: -r 0.1 -a 0.9 -b 0) is used.
    """
    g, a, b = default_weights
    if opt.gamma is None and opt.alpha is None and opt.beta is None:
        opt.gamma, opt.alpha, opt.beta = g, a, b
        return
    opt.gamma = 1.0 if opt.gamma is None else opt.gamma
    opt.alpha = a if opt.alpha is None else opt.alpha
    opt.beta = b if opt.beta is None else opt.beta


def check_student_options(opt) -> None:
    """Checks of the options only train_student.py has (called with :func:`_finish`)."""
    check_positive("--kd_T", opt.kd_T)


def parse_student_options(argv=None):
    opt = student_parser().parse_args(argv)
    _finish(opt, opt.model_s)
    check_student_options(opt)
    return opt


def student_run_name(opt) -> str:
    # RepDistiller wrote 'S:..._T:...'; colons break on some file systems, so '_' is used instead.
    return (f"S_{opt.model_s}_T_{opt.model_t}_{opt.dataset}_{opt.distill}_r_{opt.gamma}_a_{opt.alpha}"
            f"_b_{opt.beta}_{opt.trial}")
