"""Distill a student from a teacher, RepDistiller's train_student.py CLI.

    python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \
        --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1

Loss = gamma * CE + alpha * KL_T + beta * method loss; the method is the registered Distiller
named by --distill.

Seed-method options:

* KDrefine: ``--distill kdrefine`` with a re-parameterisable student (``--model_s represnet20
  --blocktype AMBB``; ``-t`` is the short form); lr 0.01 unless ``--learning_rate`` is given. Fuse the
  result with convert.py.
* ICKD-C: ``--distill ickd`` (defaults ``-r 1 -a 0 -b 2.5``; the README's variant with KL adds ``-a 1``).
* EMKD: ``--mc 1 --mc_weight W`` adds milestone checking to any method; ``my*`` students take
  ``--block_depth 3,7,2`` and their run folder names carry it (``S_myresnet20_3-7-2_T_...``; MC runs end the
  method with ``_mc``). ``--test 1`` only evaluates the student checkpoint given by ``--path_s`` (or, as in
  EMKD, by ``--path_t``) and exits.
* BYOT: ``--distill byot --model_s multi_resnet18_kd`` (or ``multi_resnet50_kd``) self-distils a multi-exit
  student; no ``--path_t``. Its recipe (200 epochs, lr 0.1 x0.1 after 75/130/180, batch 128, T 3,
  ``--data_norm byot``) fills every option not given. All four classifiers (and their ensemble) are logged
  each epoch; the end of the run prints them at the best epoch of classifier 4/4.
* CheckpointKD: ``--path_t a.pth,b.pth`` averages the teachers' logits (``--teacher_weights``), or
  ``--path_t RUN_DIR --teacher_epochs 60,120`` picks snapshots of one teacher run; works with every method
  (feature methods use the first teacher's features, ``--teacher_feat_index``). ``--distill checkpointkd`` is
  KD with its loss (0.5 CE + 0.5 T^2 KL, T 5) and recipe; ``--teacher_bn train`` and ``--teacher_scale``
  reproduce the reference's teacher BN mode and KL variant.
"""
from __future__ import annotations

import copy
import os
from typing import Optional

import torch

import distiller_zoo
from dataset import build_dataset
from distiller_zoo import DistillContext, MilestoneChecking
from helper.checkpoint import load_weights
from helper.ensemble import load_teacher_set
from helper.logging import read_metrics
from helper.loops import StudentRun, fit_runs, validate
from helper.multihead import best_epoch_row, exit_keys, exits_table
from helper.options import (_finish, check_student_options, parse_student_options,  # noqa: F401
                            resolve_loss_weights, student_parser, student_run_name)
from helper.recipe import apply_recipe, explicit_dests, set_normalization
from helper.run import (announce, describe_processes, finish_processes, is_main_process, place_model, run_cli,
                        setup_run, write_summary)
from helper.run_folder import ALREADY_FINISHED
from helper.trials import RNGStream, trial_options
from helper.util import set_seed
from models import accepts, build_model, model_dict
from models.ambb import normalize_block_type


def parse_block_depth_arg(text) -> Optional[list]:
    if text is None or isinstance(text, list):
        return text
    try:
        depth = [int(p) for p in str(text).replace(" ", "").split(",") if p]
    except ValueError:
        raise ValueError(f"--block_depth expects comma-separated block counts such as 3,7,2, got '{text}'") from None
    if not depth or any(d < 1 for d in depth):
        raise ValueError(f"--block_depth needs positive block counts, got '{text}'")
    return depth


def finish_options(opt):
    """Method-dependent defaults and checks that need the parsed options."""
    if opt.learning_rate is None:
        # KDrefine's recipe trains every student at 0.01; other methods keep RepDistiller's rule.
        method_lr = getattr(distiller_zoo.REGISTRY.get(opt.distill), "default_learning_rate", None)
        if method_lr is not None:
            opt.learning_rate = method_lr
    _finish(opt, opt.model_s)
    check_student_options(opt)
    opt.blocktype = normalize_block_type(opt.blocktype)
    opt.block_depth = parse_block_depth_arg(opt.block_depth)
    check_block_depth_applies(opt.model_s, opt.block_depth)
    return opt


def check_block_depth_applies(model_name: str, depth) -> None:
    # build_model drops block_depth for architectures without it; a given one would be silently unused.
    if depth is not None and model_name in model_dict and not accepts(model_dict[model_name], "block_depth"):
        raise ValueError(f"--block_depth applies to the self-defined my* models only, not '{model_name}'")


def parse_options(argv=None, parser=None):
    """The options of one run (the first configuration when --model_s/--distill list several)."""
    return parse_configurations(argv, parser)[0]


def parse_configurations(argv=None, parser=None):
    """One options object per student x method of comma-separated ``--model_s``/``--distill`` values.

    They train side by side in one process (the teacher's forward shared), so everything but the student, the
    method and what follows from them (default lr and loss weights, run folder) must be common to all.
    """
    parser = parser or student_parser()
    raw = parser.parse_args(argv)
    pairs = [(m, d) for m in split_list(raw.model_s) for d in split_list(raw.distill)]
    if not pairs:
        raise SystemExit("error: --model_s and --distill need at least one value each")
    configs = []
    for model_s, method in pairs:
        opt = copy.copy(raw)
        opt.model_s, opt.distill = model_s, method
        # a method's reference recipe (BYOT, CheckpointKD) replaces toolkit defaults the user did not override
        recipe = getattr(distiller_zoo.REGISTRY.get(method), "recipe", None)
        if recipe:
            opt.recipe_applied = ",".join(sorted(apply_recipe(opt, recipe, explicit_dests(parser, argv))))
        configs.append(finish_options(opt))
    if len(configs) > 1:
        check_side_by_side(configs)
    return configs


def split_list(text) -> list:
    return [v.strip() for v in str(text).split(",") if v.strip()]


def check_side_by_side(configs) -> None:
    """Several configurations share batches, schedule and teacher; refuse what cannot be shared."""
    names = ", ".join(f"{c.model_s}/{c.distill}" for c in configs)
    if any(getattr(c, "recipe_applied", "") for c in configs):
        raise SystemExit(f"error: {names}: a method with its own recipe (byot, checkpointkd) changes the schedule, "
                         "so it cannot share a run with other configurations; run it alone")
    known = [c for c in configs if c.distill in distiller_zoo.REGISTRY]
    if len({distiller_zoo.REGISTRY[c.distill].needs_teacher for c in known}) > 1:
        raise SystemExit(f"error: {names}: methods with and without a teacher cannot share a run; run them apart")
    if configs[0].test:
        raise SystemExit("error: --test 1 evaluates one student; give one --model_s and one --distill")
    if configs[0].resume not in (None, "auto"):
        raise SystemExit("error: several configurations resume with --resume auto (each from its own run folder); "
                         "a single checkpoint path names one run only")


def build_student(opt, num_classes: int):
    # The re-parameterisable students are trained in their multi-branch form; convert.py fuses them.
    return build_model(opt.model_s, num_classes=num_classes, block_type=opt.blocktype, deploy=False,
                       block_depth=opt.block_depth)


def run_folder_name(opt, student) -> str:
    """RepDistiller's ``S_..._T_...`` name; my* students add their block depth and MC runs ``_mc`` (EMKD)."""
    named = copy.copy(opt)
    depth = getattr(student, "block_depth", None)
    if depth is not None:
        named.model_s = f"{opt.model_s}_{'-'.join(str(d) for d in depth)}"
    if getattr(opt, "mc", 0):
        named.distill = f"{opt.distill}_mc"
    # snapshot/ensemble teachers are named by their epochs (CheckpointKD); self-distillation has no teacher
    named.model_t = getattr(opt, "teacher_tag", None) or opt.model_t or "self"
    return student_run_name(named)


def build_distillation(opt, data, device):
    """Teacher, student and distiller for ``opt``; every bad combination fails here, before training."""
    cls = distiller_class(opt)
    resolve_loss_weights(opt, cls.default_weights)
    teacher = None
    if cls.needs_teacher:
        opt.model_t, teacher, opt.teacher_tag = load_teacher_set(opt, data.num_classes, device)
        teacher = place_model(teacher, device, opt)
    elif opt.path_t or opt.teacher_epochs:
        raise ValueError(f"--distill {opt.distill} trains without a teacher; leave out --path_t/--teacher_epochs")
    else:
        opt.model_t = None
    student, distiller = build_student_side(opt, data, device, teacher)
    return teacher, student, distiller


def distiller_class(opt):
    if opt.distill not in distiller_zoo.REGISTRY or opt.distill == "ce":
        names = [n for n in distiller_zoo.available() if n != "ce"]
        raise ValueError(f"unknown --distill '{opt.distill}'; choose one of: {', '.join(names)}")
    return distiller_zoo.REGISTRY[opt.distill]


def build_student_side(opt, data, device, teacher):
    """The student and the method's modules for ``opt``, next to an already built teacher."""
    cls = distiller_class(opt)
    # The student's initial weights (and the method's modules) depend on --seed only, not on the RNG draws of
    # building the teacher, so that --trials builds trial i exactly as a run with its seed alone would.
    set_seed(opt.seed)
    student = place_model(build_student(opt, data.num_classes), device, opt)
    # RepDistiller sizes the extra modules from one dummy forward of both networks in eval mode.
    probe = torch.randn(2, *data.train.images.shape[1:], device=device)
    student.eval()
    feat_t = None
    with torch.no_grad():
        feat_s, _ = student(probe, is_feat=True, preact=cls.needs_preact)
        if teacher is not None:
            feat_t, _ = teacher(probe, is_feat=True, preact=cls.needs_preact)
            feat_t = list(feat_t)
    ctx = DistillContext(opt, student, teacher, list(feat_s), feat_t, train_targets=data.train.targets,
                         num_classes=data.num_classes, device=device)
    distiller = cls(ctx)
    if getattr(opt, "mc", 0):
        distiller = MilestoneChecking(distiller, ctx)
    # the method's modules (regressors, connectors, embeddings) take the networks' memory format too
    return student, place_model(distiller, device, opt)


def build_trials(opt, data, device, teacher, student, distiller, side_by_side: bool = False):
    """One StudentRun per trial; trial 0 is the student already built from ``opt``.

    ``side_by_side``: other configurations train in the same process, so even a single trial needs its own RNG
    stream and a console label naming its configuration.
    """
    def run_for(o, s, d, rng):
        label = f"[trial {o.trial}] " if opt.trials > 1 else ""
        if side_by_side:
            label = f"[{o.model_s} {o.distill} trial {o.trial}] "
        return StudentRun(o, s, d, os.path.join(o.save_dir, "student_model", run_folder_name(o, s)), o.model_s,
                          rng=rng, label=label)

    if opt.trials == 1 and not side_by_side:
        return [run_for(opt, student, distiller, RNGStream())]
    runs = [run_for(opt, student, distiller, RNGStream.capture())]
    for i in range(1, opt.trials):
        own = trial_options(opt, i)
        s, d = build_student_side(own, data, device, teacher)
        runs.append(run_for(own, s, d, RNGStream.capture()))
    return runs


def evaluate_only(opt, data, device):
    """EMKD's ``--test 1``: build the student architecture, load a trained student into it, report accuracy."""
    from convert import build_for_state_dict, read_weights

    path = opt.path_s or opt.path_t
    if not path:
        raise ValueError("--test 1 needs the student checkpoint: --path_s (or --path_t, as EMKD used it)")
    sd = read_weights(path)
    model = build_for_state_dict(opt.model_s, data.num_classes, sd, block_type=opt.blocktype,
                                 block_depth=opt.block_depth)
    load_weights(model, sd, opt.model_s, source=f"student checkpoint '{path}'")
    model = place_model(model, device, opt)
    res = validate(model, data.test, opt, device)
    params = sum(p.numel() for p in model.parameters())
    depth = getattr(model, "block_depth", None)
    arch = opt.model_s + (f" {depth}" if depth is not None else "")
    announce(f"student {arch} from '{path}': test acc {res['acc']:.2f} (top5 {res['acc_top5']:.2f}, "
             f"loss {res['loss']:.4f}); {params / 1e6:.6f}M parameters")
    return {"test_acc": res["acc"], "test_acc_top5": res["acc_top5"], "test_loss": res["loss"], "params": params}


def cudnn_determinism(configs):
    """Whether to run cuDNN deterministically (ICKD's reference does), and a console note when undecided.

    The setting is global to the process, so it applies only when every configuration of a side-by-side run
    asks for it; a mix trains every method with the (faster, autotuned) default and says so.
    """
    wanting = [distiller_class(o).deterministic_cudnn for o in configs]
    if all(wanting):
        return True, ""
    if any(wanting):
        methods = sorted({o.distill for o, wants in zip(configs, wanting) if wants})
        return False, (f"note: cuDNN stays non-deterministic, as the other methods of this run need; "
                       f"run {', '.join(methods)} alone for its reference's deterministic cuDNN")
    return False, ""


def main(argv=None, data=None):
    """Run one distillation. ``data``: a prepared DataBundle (search.py passes its held-out split)."""
    configs = parse_configurations(argv)
    opt = configs[0]
    device = setup_run(opt)
    if device.type == "cuda":
        deterministic, note = cudnn_determinism(configs)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
        if note:
            announce(note)
    if data is None:
        data = build_dataset(opt.dataset, opt.data_root, device)
    set_normalization(data, opt.data_norm)
    if opt.test:
        return evaluate_only(opt, data, device)
    teacher, student, distiller = build_distillation(opt, data, device)
    side_by_side = len(configs) > 1
    runs = build_trials(opt, data, device, teacher, student, distiller, side_by_side)
    for own in configs[1:]:
        resolve_loss_weights(own, distiller_class(own).default_weights)
        own.model_t, own.teacher_tag = opt.model_t, getattr(opt, "teacher_tag", None)
        s, d = build_student_side(own, data, device, teacher)
        runs += build_trials(own, data, device, teacher, s, d, side_by_side)
    teacher_name = getattr(opt, "teacher_tag", None) or opt.model_t
    summary = {}
    if teacher is not None:
        teacher_eval = validate(teacher, data.test, opt, device)
        summary["teacher_acc"] = teacher_eval["acc"]
        announce(f"teacher {opt.model_t}: test acc {teacher_eval['acc']:.2f} (top5 {teacher_eval['acc_top5']:.2f})")
    else:
        teacher_name = "itself"
    if getattr(opt, "recipe_applied", ""):
        announce(f"'{opt.distill}' recipe for options not given: "
                 + ", ".join(f"{k}={getattr(opt, k)}" for k in opt.recipe_applied.split(",")))
    extra = f", milestone checking x{distiller.mc_weight} {distiller.stage_weights}" if opt.mc else ""
    for own in configs:
        announce(f"distilling {teacher_name} -> {own.model_s} with '{own.distill}' (r={own.gamma}, a={own.alpha}, "
                 f"b={own.beta}{extra}) on {device}{describe_processes()}")
    announce("output: " + (runs[0].run_dir if len(runs) == 1 else f"{len(runs)} runs, "
                                                                   + ", ".join(r.run_dir for r in runs)))
    results = fit_runs(runs, opt, data, device, teacher=teacher)
    for run, result in zip(runs, results):
        if ALREADY_FINISHED in result:  # fit_runs said so; its summary.json stays as that run wrote it
            result["run_dir"] = run.run_dir
            continue
        own = {**summary, **run_summary(run.run_dir)}
        if is_main_process():
            write_summary(run.run_dir, run.opt, **own, **result)
        announce(f"{run.label}done: last test acc {result.get('last_acc', float('nan')):.2f}, "
                 f"best {result['best_acc']:.2f}")
        if "best_exits" in own:
            best = {"epoch": own["best_epoch"], **own["best_exits"]}
            announce(f"every exit at the best epoch of the deepest one:\n{exits_table(best)}")
        result["run_dir"] = run.run_dir
    first = dict(results[0])
    if len(runs) > 1:
        first["trials"] = results  # every run, in the order of the configurations and their trials
    if opt.trials > 1:
        for i in range(0, len(results), opt.trials):
            prefix = f"{runs[i].opt.model_s} {runs[i].opt.distill}: " if side_by_side else ""
            announce(prefix + trials_line(results[i:i + opt.trials]))
    finish_processes()
    return first


def trials_line(results) -> str:
    """Mean and standard deviation over trials, as the seed papers' tables report them."""
    best = torch.tensor([r["best_acc"] for r in results], dtype=torch.float64)
    last = torch.tensor([r.get("last_acc", float("nan")) for r in results], dtype=torch.float64)
    return (f"{len(results)} trials: best acc {best.mean():.2f} +- {best.std():.2f}, "
            f"last acc {last.mean():.2f} +- {last.std():.2f} (mean +- sample std)")


def run_summary(run_dir: str) -> dict:
    """Numbers the seed methods report: CheckpointKD's best test accuracy over the last 10 epochs, and for
    multi-exit students (BYOT) every exit at the epoch where the deepest one was best."""
    rows = [r for r in read_metrics(run_dir) if r.get("stage", "train") == "train" and "test_acc" in r]
    if not rows:
        return {}
    out = {"best_acc_last10": max(r["test_acc"] for r in rows[-10:])}
    best = best_epoch_row(rows)
    keys = exit_keys(best)
    if keys:
        out["best_epoch"] = best["epoch"]
        out["best_exits"] = {k: best[k] for k in keys}
    return out


if __name__ == "__main__":
    run_cli(main)
