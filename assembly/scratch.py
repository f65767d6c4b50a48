"""A model trained from scratch (a teacher, or a vanilla student): train_teacher.py's run."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict

import torch

from dataset import build_dataset, input_family, set_normalization
from distiller_zoo import DistillContext, build_distiller
from engine.fit import fit
from helper.distributed import current_env
from helper.run import announce, describe_processes, finish_processes, is_main_process, place_model, setup_run, \
    write_summary
from helper.run_folder import ALREADY_FINISHED
from models import build_model

from .options import data_settings, parse_teacher_options, teacher_run_name


@dataclass
class ScratchPlan:
    options: Any
    device: torch.device
    data: Any
    model: torch.nn.Module
    distiller: torch.nn.Module
    run_dir: str


def build_scratch_run(opt) -> ScratchPlan:
    """Device, data, the model and the plain cross-entropy method ``ce``."""
    device = setup_run(opt)
    data = build_dataset(opt.dataset, opt.data_root, device, data_settings(opt))
    set_normalization(data, opt.data_norm)
    model = build_model(opt.model, num_classes=data.num_classes, block_type=opt.blocktype, deploy=False,
                        block_depth=opt.block_depth, family=input_family(opt.dataset))
    run_dir = os.path.join(opt.save_dir, "models", teacher_run_name(opt, model.block_depth))
    model = place_model(model, device, opt)
    distiller = build_distiller("ce", DistillContext((), model, None, num_classes=data.num_classes, device=device))
    return ScratchPlan(opt, device, data, model, distiller.to(device), run_dir)


def fit_scratch_run(plan: ScratchPlan) -> Dict[str, Any]:
    opt, data = plan.options, plan.data
    announce(f"training {opt.model} on {opt.dataset} ({len(data.train)} train / {len(data.test)} test images) "
             f"on {plan.device}{describe_processes()}; output: {plan.run_dir}")
    facts = {"world_size": current_env().world_size}
    result = fit(opt, data, plan.model, plan.distiller, plan.run_dir, opt.model, plan.device, facts=facts)
    if ALREADY_FINISHED in result:  # fit said so; its summary.json stays as that run wrote it
        finish_processes()
        return result
    if is_main_process():
        write_summary(plan.run_dir, opt, facts, **result)
    announce(f"done: last test acc {result.get('last_acc', float('nan')):.2f}, best {result['best_acc']:.2f}")
    finish_processes()
    return result


def train_from_scratch(argv=None) -> Dict[str, Any]:
    """train_teacher.py's whole run: parse, build, fit (what scripts call)."""
    return fit_scratch_run(build_scratch_run(parse_teacher_options(argv)))
