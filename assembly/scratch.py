"""A model trained from scratch (a teacher, or a vanilla student): train_teacher.py's run."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch

from dataset import build_dataset, input_family, set_normalization
from distiller_zoo import DistillContext, build_distiller
from engine.fit import fit_runs
from engine.step import StudentRun
from helper.distributed import current_env
from helper.run import announce, describe_processes, finish_processes, is_main_process, place_model, setup_run, \
    write_summary
from helper.rng import RNGStream
from helper.run_folder import ALREADY_FINISHED
from helper.util import set_seed
from models import build_model

from .options import data_settings, parse_teacher_options, teacher_run_name, trial_options
from .student import trials_line


@dataclass
class ScratchPlan:
    options: Any
    device: torch.device
    data: Any
    runs: List[StudentRun] = field(default_factory=list)  # one per trial


def build_scratch_run(opt) -> ScratchPlan:
    """Device, data, and per trial the model and the plain cross-entropy method ``ce``.

    With ``--trials N`` trial i is built from ``--seed seed+i`` in its own RNG stream, so that it ends as a run of its
    own with that seed, ``--trial trial+i`` and this run's ``--data_seed`` would (CheckpointKD's ``--model_num``)."""
    device = setup_run(opt)
    data = build_dataset(opt.dataset, opt.data_root, device, data_settings(opt))
    set_normalization(data, opt.data_norm)
    plan = ScratchPlan(opt, device, data)
    facts = {"world_size": current_env().world_size}
    for i in range(opt.trials):
        own = trial_options(opt, i) if i else opt
        if opt.trials > 1:
            set_seed(own.seed)
        model = build_model(own.model, num_classes=data.num_classes, block_type=own.blocktype, deploy=False,
                            block_depth=own.block_depth, family=input_family(own.dataset))
        run_dir = os.path.join(own.save_dir, "models", teacher_run_name(own, model.block_depth))
        model = place_model(model, device, own)
        distiller = build_distiller("ce", DistillContext((), model, None, num_classes=data.num_classes,
                                                         device=device))
        rng = RNGStream.capture() if opt.trials > 1 else RNGStream()
        label = f"[trial {own.trial}] " if opt.trials > 1 else ""
        plan.runs.append(StudentRun(own, model, distiller.to(device), run_dir, own.model, rng=rng, label=label,
                                    facts=dict(facts)))
    return plan


def fit_scratch_run(plan: ScratchPlan) -> Dict[str, Any]:
    opt, data, runs = plan.options, plan.data, plan.runs
    output = runs[0].run_dir if len(runs) == 1 else f"{len(runs)} runs, " + ", ".join(r.run_dir for r in runs)
    announce(f"training {opt.model} on {opt.dataset} ({len(data.train)} train / {len(data.test)} test images) "
             f"on {plan.device}{describe_processes()}; output: {output}")
    results = fit_runs(runs, opt, data, plan.device)
    for run, result in zip(runs, results):
        if ALREADY_FINISHED not in result:  # else fit_runs said so; its summary.json stays as that run wrote it
            if is_main_process():
                write_summary(run.run_dir, run.opt, run.facts, **result)
            announce(f"{run.label}done: last test acc {result.get('last_acc', float('nan')):.2f}, "
                     f"best {result['best_acc']:.2f}")
    first = dict(results[0])
    if len(runs) > 1:
        first["trials"] = [dict(result, run_dir=run.run_dir) for run, result in zip(runs, results)]
        announce(trials_line(results))
    finish_processes()
    return first


def train_from_scratch(argv=None) -> Dict[str, Any]:
    """train_teacher.py's whole run: parse, build, fit (what scripts call)."""
    return fit_scratch_run(build_scratch_run(parse_teacher_options(argv)))
