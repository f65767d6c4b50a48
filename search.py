"""EMKD's block composition search (BCS): which per-stage block counts suit a student, at about constant size.

    python search.py --model_t resnet110 --path_t ./save/models/resnet110_vanilla/ckpt_epoch_240.pth \
        --distill crd --mc 1 --mc_weight 0.001 --model_s myresnet20 --block_depth 3,3,3 -a 0 -b 0.8 --trial 1

Takes every train_student.py flag. With n_s the student's nominal blocks per stage (myresnet20: 3) and n_t the
teacher's (resnet110: 18), candidates [x, y, z] are visited in two phases; each trades one block of a deeper
(wider) stage for four of the stage before it, which keeps the parameter count about constant:

* phase 1 starts at [n_s, n_s, n_s] and repeats z -= 1, y += 4 while z >= 1 and y <= n_t;
* phase 2 starts from the best phase-1 (y, z) at [n_s + 4, y - 1, z] and repeats y -= 1, x += 4 while
  y >= 1 and x <= n_t.

For resnet110 -> myresnet20: [3,3,3], [3,7,2], [3,11,1], then (if [3,7,2] won) [7,6,2], [11,5,2], [15,4,2].

Each candidate is a full train_student.py run (all epochs) in its own folder under
``<save_dir>/search/<search name>/student_model/``; EMKD wrote every candidate into one folder. A candidate's
score is its best accuracy over the epochs on the selection split:

* ``--select_on val`` (default): a stratified ``--val_fraction`` of the training set (seed ``--val_seed``) is
  held out; candidates train on the rest and are scored on it, so the test set plays no part in the choice.
  The per-epoch "test" numbers in these candidate folders are on that held-out split; the summary adds each
  candidate's test accuracy after its last epoch.
* ``--select_on test``: EMKD's procedure, training on the whole training set and scoring on the test set.

Milestone weights follow each candidate's own depths (nominal / actual per stage). EMKD recomputed them only
for a method named 'crd_mlkd', so its CRD searches kept the starting candidate's weights.

At the end a markdown table of all candidates is printed and written to ``search_summary.md`` (with
``search_result.json``) in the search folder.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Callable, Dict, List, Sequence, Tuple

import torch

import train_student
from dataset import DataBundle, TensorImageSet, build_dataset
from helper.checkpoint import load_checkpoint, load_weights
from helper.loops import validate
from helper.options import student_parser
from helper.run import place_model, run_cli
from helper.teacher import get_teacher_name
from helper.util import select_device
from models import build_model

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


def search_name(opt) -> str:
    distill = opt.distill + ("_mc" if opt.mc else "")
    return (f"BCS_S_{opt.model_s}_T_{opt.model_t}_{opt.dataset}_{distill}_r_{opt.gamma}_a_{opt.alpha}_b_{opt.beta}"
            f"_{opt.trial}_on_{opt.select_on}")


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


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    search_opt, rest = split_argv(argv)
    opt = train_student.parse_options(argv, parser=search_parser())
    if opt.test:
        # EMKD's --test 1 evaluates one student and stops; there is nothing to search.
        return train_student.main(rest)
    if not opt.path_t:
        raise ValueError("--path_t is required: the teacher checkpoint to distill from")
    model_t = opt.model_t or get_teacher_name(opt.path_t)
    opt.model_t = model_t
    n_s, n_t = nominal_stage_depth(opt.model_s), nominal_stage_depth(model_t)
    # resolve -r/-a/-b now so the search folder name shows the weights the candidates use
    cls = train_student.distiller_zoo.REGISTRY.get(opt.distill)
    if cls is not None:
        train_student.resolve_loss_weights(opt, cls.default_weights)
    root = os.path.join(opt.save_dir, "search", search_name(opt))
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
        res = train_student.main(cand_argv, data=select_data)
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


if __name__ == "__main__":
    run_cli(main)
