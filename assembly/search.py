"""EMKD's block composition search (the body of search.py; see its docstring)."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from dataset import DataBundle, TensorImageSet, build_dataset
from engine.evaluate import validate
from engine.teacher import teacher_name_from_path
from helper.checkpoint import load_checkpoint, load_weights
from helper.run import place_model
from helper.util import select_device
from models import build_model

from .options import parse_configurations, student_parser
from .student import distill

# --------------------------------------------------------------------------- the search space (pure)

_STAGE_DEPTH_RULES = (
    (re.compile(r"^(?:my)?resnet(\d+)(?:x4)?$"), lambda d: (d - 2) // 6),
    (re.compile(r"^(?:my)?wrn_(\d+)_\d+$"), lambda d: (d - 4) // 6),
)


def nominal_stage_depth(name: str) -> int:
    """Blocks per stage of a CIFAR ResNet (6n+2) or WRN (6n+4) by name: resnet110 18, myresnet20 3, wrn_40_2 6."""
    for pattern, blocks in _STAGE_DEPTH_RULES:
        m = pattern.match(name)
        if m:
            return blocks(int(m.group(1)))
    raise ValueError(f"block composition search needs three-stage CIFAR ResNet/WRN names (resnetN, resnetNx4, "
                     f"wrn_D_W and their my* forms), got '{name}'")


def phase1_candidates(n_s: int, n_t: int) -> List[List[int]]:
    x, y, z = n_s, n_s, n_s
    out = []
    while z >= 1 and y <= n_t:
        out.append([x, y, z])
        z, y = z - 1, y + 4
    return out


def phase2_candidates(n_s: int, n_t: int, y_opt: int, z_opt: int) -> List[List[int]]:
    x, y, z = n_s + 4, y_opt - 1, z_opt
    out = []
    while y >= 1 and x <= n_t:
        out.append([x, y, z])
        y, x = y - 1, x + 4
    return out


def block_composition_search(n_s: int, n_t: int, evaluate: Callable[[List[int], int], float]
                             ) -> Tuple[List[int], float, List[Tuple[int, List[int], float]]]:
    """Run both phases with ``evaluate(block_depth, phase) -> score``; returns (best depth, score, history).

    Ties keep the earlier candidate (strict improvement, as EMKD).
    """
    best, history = -math.inf, []
    x_opt = y_opt = z_opt = n_s
    for cand in phase1_candidates(n_s, n_t):
        score = float(evaluate(list(cand), 1))
        history.append((1, list(cand), score))
        if score > best:
            best, y_opt, z_opt = score, cand[1], cand[2]
    for cand in phase2_candidates(n_s, n_t, y_opt, z_opt):
        score = float(evaluate(list(cand), 2))
        history.append((2, list(cand), score))
        if score > best:
            best, x_opt, y_opt = score, cand[0], cand[1]
    return [x_opt, y_opt, z_opt], best, history


# --------------------------------------------------------------------------- held-out validation split

def stratified_holdout(targets: torch.Tensor, fraction: float, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices): round(fraction * N) samples, spread over the classes in proportion.

    Each class gives floor(fraction * n_c); the remaining slots go to the classes with the largest remainders
    (ties in a seeded random order). A class always keeps at least one training sample.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--val_fraction must lie strictly between 0 and 1, got {fraction}")
    y = targets.detach().cpu().long()
    g = torch.Generator().manual_seed(int(seed))
    classes = torch.unique(y)
    counts = torch.stack([(y == c).sum() for c in classes]).double()
    quota = counts * fraction
    take = torch.floor(quota).long()
    missing = int(round(fraction * y.numel())) - int(take.sum())
    if missing > 0:
        order = torch.randperm(len(classes), generator=g)
        rem = (quota - take.double())[order]
        ranked = order[torch.sort(rem, descending=True, stable=True).indices]
        take[ranked[:missing]] += 1
    take = torch.minimum(take, counts.long() - 1).clamp(min=0)
    if int(take.sum()) == 0:
        raise ValueError(f"--val_fraction {fraction} holds out no sample of this training set ({y.numel()} images)")
    val = []
    for c, k in zip(classes, take.tolist()):
        idx = torch.nonzero(y == c).flatten()
        val.append(idx[torch.randperm(idx.numel(), generator=g)[:k]])
    val_idx = torch.sort(torch.cat(val)).values
    mask = torch.ones(y.numel(), dtype=torch.bool)
    mask[val_idx] = False
    return torch.nonzero(mask).flatten(), val_idx


def subset(split: TensorImageSet, idx: torch.Tensor) -> TensorImageSet:
    if not isinstance(split, TensorImageSet):
        raise ValueError("a held-out part of the training split is made for the in-memory data sets (cifar100, "
                         "cifar10, digits) only; a folder data set (imagenet, tiny_imagenet) is read from disk: score "
                         "on its val/ split instead (search.py --select_on test)")
    idx = idx.to(split.device)
    return TensorImageSet(split.images.index_select(0, idx), split.targets.index_select(0, idx),
                          split.mean.flatten().tolist(), split.std.flatten().tolist(), split.pad, split.flip)


def holdout_bundle(data: DataBundle, fraction: float, seed: int) -> DataBundle:
    """The training split minus a held-out part, with that part in the evaluation slot."""
    tr, va = stratified_holdout(data.train.targets, fraction, seed)
    return DataBundle(data.name, subset(data.train, tr), subset(data.train, va), data.num_classes)


# --------------------------------------------------------------------------- command line

def add_search_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("block composition search")
    g.add_argument("--select_on", type=str, default="val", choices=["val", "test"],
                   help="score candidates on a held-out part of the training set (val) or, as EMKD, on the "
                        "test set (test)")
    g.add_argument("--val_fraction", type=float, default=0.1, help="held-out share of the training set (val)")
    g.add_argument("--val_seed", type=int, default=0, help="seed of the held-out split")


def search_parser() -> argparse.ArgumentParser:
    p = student_parser()
    p.description = "block composition search: train_student.py runs over per-stage block counts"
    # Flags are split between search and train_student by exact name, so abbreviations are refused.
    p.allow_abbrev = False
    add_search_args(p)
    return p


def split_argv(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """(search options, the remaining train_student.py arguments)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_search_args(p)
    return p.parse_known_args(list(argv))


def search_name(opt, model_t: str, select_on: str) -> str:
    method = opt.distill + ("_mc" if opt.mc else "")
    return (f"BCS_S_{opt.model_s}_T_{model_t}_{opt.dataset}_{method}_r_{opt.gamma}_a_{opt.alpha}_b_{opt.beta}"
            f"_{opt.trial}_on_{select_on}")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def summary_table(rows: List[Dict], best_depth: List[int], select_on: str) -> str:
    lines = [f"| # | phase | block_depth | params | best {select_on} acc (score) | last {select_on} acc "
             f"| test acc (last epoch) | run folder |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        mark = " **best**" if r["block_depth"] == best_depth else ""
        lines.append(f"| {i} | {r['phase']} | {','.join(map(str, r['block_depth']))}{mark} | {r['params']:,} "
                     f"| {_fmt(r['score'])} | {_fmt(r['last_select_acc'])} | {_fmt(r['test_acc'])} "
                     f"| {os.path.basename(r['run_dir'])} |")
    return "\n".join(lines)


def search(argv=None):
    """search.py's whole run: every candidate a train_student.py run, then the summary table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    search_opt, rest = split_argv(argv)
    opt = parse_configurations(argv, parser=search_parser())[0].options
    if opt.test:
        # EMKD's --test 1 evaluates one student and stops; there is nothing to search.
        return distill(rest)
    if not opt.path_t:
        raise ValueError("--path_t is required: the teacher checkpoint to distill from")
    model_t = opt.model_t or teacher_name_from_path(opt.path_t)
    n_s, n_t = nominal_stage_depth(opt.model_s), nominal_stage_depth(model_t)
    # the folder name shows the -r/-a/-b the candidates use (resolved by the option parser)
    root = os.path.join(opt.save_dir, "search", search_name(opt, model_t, search_opt.select_on))
    device = select_device(opt.device)
    data = build_dataset(opt.dataset, opt.data_root, device)
    select_data = data if search_opt.select_on == "test" else holdout_bundle(data, search_opt.val_fraction,
                                                                              search_opt.val_seed)
    print(f"block composition search {opt.model_s} (nominal {n_s} blocks/stage) <- {model_t} ({n_t}); "
          f"candidates scored on the {search_opt.select_on} split ({len(select_data.test)} images, "
          f"{len(select_data.train)} training); output: {root}", flush=True)
    rows: List[Dict] = []

    def evaluate(depth: List[int], phase: int) -> float:
        print(f"==> candidate {depth} (phase {phase})", flush=True)
        cand_argv = rest + ["--block_depth", ",".join(map(str, depth)), "--save_dir", root,
                            "--model_t", model_t]
        res = distill(cand_argv, data=select_data)
        model = build_model(opt.model_s, num_classes=data.num_classes, block_depth=depth)
        last = os.path.join(res["run_dir"], f"{opt.model_s}_last.pth")
        load_weights(model, load_checkpoint(last), opt.model_s, source=f"'{last}'")
        test_acc = validate(place_model(model, device), data.test, opt, device)["acc"]
        rows.append({"phase": phase, "block_depth": depth, "score": res["best_acc"],
                     "last_select_acc": res.get("last_acc"), "test_acc": test_acc,
                     "params": sum(p.numel() for p in model.parameters()), "run_dir": res["run_dir"]})
        print(f"==> candidate {depth}: best {search_opt.select_on} acc {res['best_acc']:.2f}, "
              f"test acc {test_acc:.2f}", flush=True)
        return res["best_acc"]

    best_depth, best, _ = block_composition_search(n_s, n_t, evaluate)
    table = summary_table(rows, best_depth, search_opt.select_on)
    head = (f"# Block composition search: {opt.model_s} <- {model_t}, --distill {opt.distill}"
            f"{' + MC' if opt.mc else ''}, selected on {search_opt.select_on}\n\n"
            f"Best block_depth: {','.join(map(str, best_depth))} (score {best:.2f})\n\n")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "search_summary.md"), "w") as f:
        f.write(head + table + "\n")
    with open(os.path.join(root, "search_result.json"), "w") as f:
        json.dump({"best_block_depth": best_depth, "best_score": best, "select_on": search_opt.select_on,
                   "val_fraction": search_opt.val_fraction if search_opt.select_on == "val" else None,
                   "candidates": rows}, f, indent=2)
    print("\n" + head + table, flush=True)
    return {"best_block_depth": best_depth, "best_score": best, "candidates": rows, "search_dir": root}

