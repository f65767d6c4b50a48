"""A distillation run built from its configurations: data, teacher, students, methods, trials, side by side.

``train_student.py`` is ``parse_configurations`` -> :func:`build_student_runs` -> :func:`fit_student_runs`;
scripts call :func:`distill` for the three.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from dataset import build_dataset, input_family, set_normalization
import distiller_zoo
from distiller_zoo import POST, DistillContext
from engine.evaluate import validate
from engine.fit import fit_runs
from engine.forward import forward
from engine.step import StudentRun
from engine.teacher import Teacher, load_teacher
from helper.checkpoint import load_weights
from helper.distributed import current_env
from helper.logging import read_metrics
from helper.multihead import best_epoch_row, exit_keys, exits_table
from helper.rng import RNGStream
from helper.run import announce, describe_processes, finish_processes, is_main_process, place_model, setup_run, \
    write_summary
from helper.run_folder import ALREADY_FINISHED
from helper.util import set_seed
from models import build_model

from .deploy import build_for_state_dict, deploy_entry, deployed_network, read_weights
from .options import Configuration, data_settings, distiller_class, parse_configurations, student_run_name, \
    trial_options


@dataclass
class StudentPlan:
    """Everything a distillation run needs, built and checked before the first step."""

    configs: List[Configuration]
    device: torch.device
    data: Any
    teacher: Optional[Teacher] = None
    runs: List[StudentRun] = field(default_factory=list)

    @property
    def options(self):
        """What the runs share (epochs, batches, precision): the first configuration's options."""
        return self.configs[0].options

    @property
    def side_by_side(self) -> bool:
        return len(self.configs) > 1


def cudnn_determinism(configs: List[Configuration]):
    """Whether to run cuDNN deterministically (ICKD's reference does), and a console note when undecided.

    The setting is global to the process, so it applies only when every configuration of a side-by-side run
    asks for it; a mix trains every method with the (faster, autotuned) default and says so.
    """
    wanting = [distiller_class(c.options.distill).deterministic_cudnn for c in configs]
    if all(wanting):
        return True, ""
    if any(wanting):
        methods = sorted({c.options.distill for c, wants in zip(configs, wanting) if wants})
        return False, (f"note: cuDNN stays non-deterministic, as the other methods of this run need; "
                       f"run {', '.join(methods)} alone for its reference's deterministic cuDNN")
    return False, ""


def prepare_data(configs: List[Configuration], data=None):
    """Process group, seeds, device, cuDNN mode and the data set (``data``: a prepared DataBundle, e.g. search.py's
    held-out split). Returns ``(device, data)``."""
    opt = configs[0].options
    device = setup_run(opt)
    if device.type == "cuda":
        deterministic, note = cudnn_determinism(configs)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
        if note:
            announce(note)
    if data is None:
        data = build_dataset(opt.dataset, opt.data_root, device, data_settings(opt))
    set_normalization(data, opt.data_norm)
    return device, data


def build_teacher(opt, data, device) -> Optional[Teacher]:
    """The run's teacher, or None for a method that trains without one (which then may not name one)."""
    cls = distiller_class(opt.distill)
    if not cls.needs_teacher:
        if opt.path_t or opt.teacher_epochs:
            raise ValueError(f"--distill {opt.distill} trains without a teacher; leave out --path_t/--teacher_epochs")
        return None
    teacher = load_teacher(opt.path_t, data.num_classes, device, model_t=opt.model_t,
                           teacher_epochs=opt.teacher_epochs, teacher_weights=opt.teacher_weights,
                           teacher_feat_index=opt.teacher_feat_index, teacher_bn=opt.teacher_bn,
                           family=input_family(opt.dataset))
    return place_model(teacher, device, opt)


def build_student(opt, num_classes: int):
    # The re-parameterisable students are trained in their multi-branch form; convert.py fuses them.
    return build_model(opt.model_s, num_classes=num_classes, block_type=opt.blocktype, deploy=False,
                       block_depth=opt.block_depth, family=input_family(opt.dataset))


def build_student_side(opt, data, device, teacher: Optional[Teacher]):
    """The student and the method's modules for ``opt``, next to an already built teacher; every bad combination
    of method, student and teacher fails here, before training."""
    cls = distiller_class(opt.distill)
    # The student's initial weights (and the method's modules) depend on --seed only, not on the RNG draws of
    # building the teacher, so that --trials builds trial i exactly as a run with its seed alone would.
    set_seed(opt.seed)
    student = place_model(build_student(opt, data.num_classes), device, opt)
    # RepDistiller sizes the extra modules from one dummy forward of both networks in eval mode.
    probe = torch.randn(2, *data.train.input_shape, device=device)
    student.eval()
    feat_t = None
    with torch.no_grad():
        feat_s = forward(student, probe, cls.student_features or POST).feats
        if teacher is not None:
            feat_t = forward(teacher, probe, cls.teacher_features or POST).feats
    network_t = None if teacher is None else teacher.feature_model

    def context(method_cls):
        return DistillContext(method_cls.select_options(opt), student, network_t, list(feat_s), feat_t,
                              train_targets=data.train.targets, num_classes=data.num_classes, device=device,
                              student_name=opt.model_s, batch_size=opt.batch_size)

    distiller = cls(context(cls))
    for addon in distiller_zoo.ADDONS:
        if addon.enabled(opt):
            distiller = addon.attach(distiller, context(addon))
    # the method's modules (regressors, connectors, embeddings) take the networks' memory format too
    return student, place_model(distiller, device, opt)


def run_facts(teacher: Optional[Teacher]) -> Dict[str, Any]:
    """What the saved options record besides the flags: the teacher's name and the number of processes."""
    facts: Dict[str, Any] = {"world_size": current_env().world_size,
                             "model_t": None if teacher is None else teacher.arch}
    if teacher is not None and teacher.tag:
        facts["teacher_tag"] = teacher.tag
    return facts


def build_configuration_runs(config: Configuration, data, device, teacher: Optional[Teacher],
                             side_by_side: bool) -> List[StudentRun]:
    """One StudentRun per trial of one configuration, each in its own RNG stream (captured after building it, so
    its draws are those of a run of its own); a single run alone uses the global RNG."""
    opt = config.options
    label_t = "self" if teacher is None else teacher.label
    runs = []
    for i in range(opt.trials):
        own = trial_options(opt, i) if i else opt
        student, distiller = build_student_side(own, data, device, teacher)
        rng = RNGStream() if opt.trials == 1 and not side_by_side else RNGStream.capture()
        label = f"[trial {own.trial}] " if opt.trials > 1 else ""
        if side_by_side:
            label = f"[{own.model_s} {own.distill} trial {own.trial}] "
        name = student_run_name(own, label_t, student.block_depth)
        runs.append(StudentRun(own, student, distiller, os.path.join(own.save_dir, "student_model", name),
                               own.model_s, rng=rng, label=label, facts=run_facts(teacher)))
    return runs


def build_student_runs(configs: List[Configuration], data=None) -> StudentPlan:
    """Device, data, teacher, and every configuration's students and methods (:class:`StudentPlan`)."""
    device, data = prepare_data(configs, data)
    plan = StudentPlan(configs, device, data)
    if plan.options.test:
        return plan
    plan.teacher = build_teacher(plan.options, data, device)
    for config in configs:
        plan.runs += build_configuration_runs(config, data, device, plan.teacher, plan.side_by_side)
    return plan


def evaluate_student(plan: StudentPlan) -> Dict[str, Any]:
    """EMKD's ``--test 1``: build the student architecture, load a trained student into it, report accuracy."""
    opt, device = plan.options, plan.device
    path = opt.path_s or opt.path_t
    if not path:
        raise ValueError("--test 1 needs the student checkpoint: --path_s (or --path_t, as EMKD used it)")
    sd = read_weights(path)
    model = build_for_state_dict(opt.model_s, plan.data.num_classes, sd, block_type=opt.blocktype,
                                 block_depth=opt.block_depth, family=input_family(opt.dataset))
    load_weights(model, sd, opt.model_s, source=f"student checkpoint '{path}'")
    depth = model.block_depth
    # what the run deployed: the student, or (SimKD) the student with its projector and the teacher's classifier
    model = place_model(deployed_network(model, deploy_entry(path), f"student checkpoint '{path}'"), device, opt)
    res = validate(model, plan.data.test, opt, device)
    params = sum(p.numel() for p in model.parameters())
    arch = opt.model_s + (f" {depth}" if depth is not None else "")
    announce(f"student {arch} from '{path}': test acc {res['acc']:.2f} (top5 {res['acc_top5']:.2f}, "
             f"loss {res['loss']:.4f}); {params / 1e6:.6f}M parameters")
    return {"test_acc": res["acc"], "test_acc_top5": res["acc_top5"], "test_loss": res["loss"], "params": params}


def announce_plan(plan: StudentPlan) -> Dict[str, Any]:
    """The console lines of a run's start; returns the teacher's numbers for the summaries."""
    opt, teacher, summary = plan.options, plan.teacher, {}
    teacher_name = "itself"
    if teacher is not None:
        teacher_eval = validate(teacher, plan.data.test, opt, plan.device)
        summary["teacher_acc"] = teacher_eval["acc"]
        teacher_name = teacher.label
        announce(f"teacher {teacher.arch}: test acc {teacher_eval['acc']:.2f} (top5 {teacher_eval['acc_top5']:.2f})")
    for config in plan.configs:
        own = config.options
        prefix = f"{own.model_s} {own.distill}: " if plan.side_by_side else ""
        announce(prefix + config.describe())
    first = plan.runs[0].distiller
    extra = f", milestone checking x{first.mc_weight} {first.stage_weights}" if opt.mc else ""
    for config in plan.configs:
        own = config.options
        announce(f"distilling {teacher_name} -> {own.model_s} with '{own.distill}' (r={own.gamma}, a={own.alpha}, "
                 f"b={own.beta}{extra}) on {plan.device}{describe_processes()}")
    runs = plan.runs
    announce("output: " + (runs[0].run_dir if len(runs) == 1 else f"{len(runs)} runs, "
                                                                   + ", ".join(r.run_dir for r in runs)))
    return summary


def fit_student_runs(plan: StudentPlan) -> Dict[str, Any]:
    """Train every run of the plan, write each run's summary.json and print the results."""
    if plan.options.test:
        return evaluate_student(plan)
    opt, runs = plan.options, plan.runs
    summary = announce_plan(plan)
    results = fit_runs(runs, opt, plan.data, plan.device, teacher=plan.teacher)
    for run, result in zip(runs, results):
        if ALREADY_FINISHED in result:  # fit_runs said so; its summary.json stays as that run wrote it
            result["run_dir"] = run.run_dir
            continue
        own = {**summary, **run_summary(run.run_dir)}
        if is_main_process():
            write_summary(run.run_dir, run.opt, run.facts, **own, **result)
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
            prefix = f"{runs[i].opt.model_s} {runs[i].opt.distill}: " if plan.side_by_side else ""
            announce(prefix + trials_line(results[i:i + opt.trials]))
    finish_processes()
    return first


def distill(argv=None, data=None) -> Dict[str, Any]:
    """train_student.py's whole run: parse, build, fit (what scripts call)."""
    return fit_student_runs(build_student_runs(parse_configurations(argv), data))


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
