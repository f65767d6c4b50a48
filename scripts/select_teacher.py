"""Rank a teacher run's snapshots (``ckpt_epoch_N.pth``) as CheckpointKD teachers, without training students.

    python scripts/select_teacher.py --run_dir save/models/wrn_40_2_cifar100_lr_0.1_decay_0.0005_trial_0 \
        --dataset cifar100 --kd_T 5

CheckpointKD (NeurIPS 2022) observes that an intermediate checkpoint often teaches better than the converged
model, and its paper picks one with an information-bottleneck argument; its repository has no selection
code. This script is this toolkit's cheap, documented stand-in. It is a heuristic: it ranks candidates, it
does not predict student accuracy, and a short student run on the top few is the real test.

Data: a stratified sample (``--fraction`` of each class, seed ``--seed``) of the *training* split, evaluated
without augmentation. The training split is used because that is where the student queries the teacher:
what matters is how informative the teacher's soft labels are on images it was trained on (a converged
teacher is nearly one-hot there). The test split is never read, so choosing a checkpoint this way leaks
nothing about the test set. (If the teacher was trained with part of the training split held out, point
``--data_root`` at a data set holding that part as its training split.)

Per snapshot, on the sample:

* ``acc``: top-1 accuracy (%); ``nll`` and ``ece`` (15 equal-width confidence bins): calibration at T = 1.
* ``entropy``: mean entropy of the soft labels ``softmax(z / T)`` at the distillation temperature ``--kd_T``,
  divided by log C (0 = one-hot, 1 = uniform): how much non-target ("dark") knowledge the targets carry.
* ``mi``: an estimate of the mutual information I(F; Y) between the teacher's penultimate feature
  (``feats[-1]``, L2-normalised) and the label, by the k-nearest-neighbour estimator of Ross (2014,
  "Mutual information between discrete and continuous data sets"), ``--knn`` neighbours, in nats and
  divided by the sample's label entropy H(Y) (1 = the features determine the class).

Criterion: ``score = mi * entropy`` (both normalised to [0, 1]): a good teacher's features must carry the
task information (high I(F; Y)) while its soft labels are still far from one-hot (high entropy). Random
early checkpoints fail the first factor, the converged model tends to fail the second. Snapshots whose
accuracy is below ``--min_acc_ratio`` times the best snapshot's are ranked after all others (their labels are
wrong too often). ``--criterion`` ranks by a single column instead (acc, mi, entropy, -nll, -ece).
The recommendation is the top-ranked snapshot; use it with
``train_student.py --path_t RUN_DIR --teacher_epochs N``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset import build_dataset  # noqa: E402
from helper.checkpoint import load_checkpoint, load_weights, snapshot_paths  # noqa: E402
from engine.teacher import teacher_name_from_path  # noqa: E402
from assembly.options import DEBUG  # noqa: E402
from dataset import NORMALIZATIONS, set_normalization  # noqa: E402
from helper.util import select_device  # noqa: E402
from models import build_model  # noqa: E402
from assembly.search import stratified_holdout, subset  # noqa: E402

CRITERIA = ("score", "acc", "mi", "entropy", "-nll", "-ece")


from helper.run import run_cli  # noqa: E402

def knn_mutual_information(feats: torch.Tensor, labels: torch.Tensor, k: int = 3, chunk: int = 1024) -> float:
    """Ross (2014) estimate of I(F; Y) in nats for continuous ``feats`` (N, d) and discrete ``labels`` (N,).

    For sample i of class c (N_c samples, k_i = min(k, N_c - 1)): d_i is the distance to its k_i-th nearest
    neighbour of the same class and m_i the number of samples of any class within d_i (self excluded). Then
    I = psi(N) - <psi(N_c)> + <psi(k_i)> - <psi(m_i)>, averaged over the samples of classes with N_c >= 2.
    Clipped at 0 (the estimator can dip slightly below for independent data).
    """
    feats = feats.float()
    labels = labels.long()
    counts = torch.bincount(labels)
    keep = counts[labels] >= 2
    feats, labels = feats[keep], labels[keep]
    n = labels.numel()
    if n < 2:
        return 0.0
    counts = torch.bincount(labels)
    n_c = counts[labels]
    k_i = torch.clamp(n_c - 1, max=k)
    m = torch.empty(n, dtype=torch.long, device=feats.device)
    for start in range(0, n, chunk):
        d = torch.cdist(feats[start:start + chunk], feats)
        rows = torch.arange(d.shape[0], device=d.device)
        d[rows, start + rows] = float("inf")  # self
        same = labels[start:start + chunk, None] == labels[None, :]
        d_same = torch.where(same, d, torch.full_like(d, float("inf")))
        kk = k_i[start:start + chunk]
        radius = torch.sort(d_same, dim=1).values.gather(1, (kk - 1)[:, None])
        m[start:start + chunk] = (d <= radius).sum(dim=1)
    dg = torch.special.digamma
    mi = (dg(torch.tensor(float(n))) - dg(n_c.double()).mean() + dg(k_i.double()).mean()
          - dg(m.double()).mean())
    return max(float(mi), 0.0)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    conf, pred = probs.max(dim=1)
    hit = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1, device=probs.device)
    ece = torch.zeros((), device=probs.device)
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.float().mean() * (conf[sel].mean() - hit[sel].mean()).abs()
    return float(ece)


@torch.no_grad()
def snapshot_metrics(model, split, T: float, knn: int, batch_size: int = 256) -> Dict[str, float]:
    model.eval()
    logits, feats, ys = [], [], []
    for batch in split.eval_batches(batch_size):
        f, z = model(batch.x, is_feat=True)
        logits.append(z.float())
        feats.append(torch.flatten(f[-1], 1).float())
        ys.append(batch.y)
    z = torch.cat(logits)
    y = torch.cat(ys)
    fe = F.normalize(torch.cat(feats), dim=1)
    C = z.shape[1]
    probs = F.softmax(z, dim=1)
    soft = F.softmax(z / T, dim=1)
    entropy = -(soft * soft.clamp_min(1e-12).log()).sum(dim=1).mean() / math.log(C)
    p_y = torch.bincount(y, minlength=C).double() / y.numel()
    h_y = float(-(p_y[p_y > 0] * p_y[p_y > 0].log()).sum())
    mi = knn_mutual_information(fe, y, k=knn)
    return {"acc": float((z.argmax(1) == y).float().mean() * 100), "nll": float(F.cross_entropy(z, y)),
            "ece": expected_calibration_error(probs, y), "entropy": float(entropy), "mi_nats": mi,
            "mi": mi / h_y if h_y > 0 else 0.0}


def rank(rows: List[Dict], criterion: str = "score", min_acc_ratio: float = 0.8) -> List[Dict]:
    """Adds ``score`` and ``rank`` (1 = recommended) to every row; returns the rows in rank order."""
    if criterion not in CRITERIA:
        raise ValueError(f"--criterion must be one of {', '.join(CRITERIA)}")
    best_acc = max(r["acc"] for r in rows)
    for r in rows:
        r["score"] = r["mi"] * r["entropy"]
        r["eligible"] = r["acc"] >= min_acc_ratio * best_acc
    key = criterion.lstrip("-")
    sign = -1.0 if criterion.startswith("-") else 1.0
    ordered = sorted(rows, key=lambda r: (not r["eligible"], -sign * r[key], r["epoch"]))
    for i, r in enumerate(ordered, start=1):
        r["rank"] = i
    return ordered


def table(rows: List[Dict]) -> str:
    head = "| rank | epoch | acc | nll | ece | entropy | mi (nats) | mi | score |"
    out = [head, "|" + "---|" * 9]
    for r in rows:
        mark = "" if r["eligible"] else " (low acc)"
        out.append(f"| {r['rank']} | {r['epoch']}{mark} | {r['acc']:.2f} | {r['nll']:.4f} | {r['ece']:.4f} | "
                   f"{r['entropy']:.4f} | {r['mi_nats']:.4f} | {r['mi']:.4f} | {r['score']:.4f} |")
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="rank a teacher run's snapshots as distillation teachers")
    p.add_argument("--run_dir", required=True, help="teacher run folder holding ckpt_epoch_N.pth files")
    p.add_argument("--model", default=None, help="architecture (default: parsed from the run folder name)")
    p.add_argument("--epochs", default=None, help="only these snapshot epochs, e.g. 60,100,200")
    p.add_argument("--dataset", default="cifar100", choices=["cifar100", "cifar10", "digits"])
    p.add_argument("--data_root", default="./data")
    p.add_argument("--data_norm", default=None, choices=sorted(NORMALIZATIONS),
                   help="input normalisation (default: the one stored in the snapshots, else the data set's)")
    p.add_argument("--fraction", type=float, default=0.1, help="share of each class of the training split used")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified sample")
    p.add_argument("--kd_T", type=float, default=4.0, help="distillation temperature for the soft-label entropy")
    p.add_argument("--knn", type=int, default=3, help="neighbours of the mutual-information estimator")
    p.add_argument("--min_acc_ratio", type=float, default=0.8,
                   help="snapshots below this fraction of the best accuracy are ranked last")
    p.add_argument("--criterion", default="score", choices=CRITERIA)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write the ranked rows to this file")
    DEBUG.add_to(p)
    return p


def main(argv=None) -> Dict:
    opt = parser().parse_args(argv)
    device = select_device(opt.device)
    snaps = snapshot_paths(opt.run_dir)
    if opt.epochs:
        wanted = {int(e) for e in str(opt.epochs).split(",") if e.strip()}
        snaps = [(e, p) for e, p in snaps if e in wanted]
    if not snaps:
        raise FileNotFoundError(f"no ckpt_epoch_N.pth snapshots in '{opt.run_dir}' (train the teacher with "
                                f"--save_freq N to keep them)")
    arch = opt.model or teacher_name_from_path(os.path.join(opt.run_dir, "x"))
    data = build_dataset(opt.dataset, opt.data_root, device)
    states = [(e, p, load_checkpoint(p)) for e, p in snaps]
    norm = opt.data_norm
    if norm is None:
        stored = [s.get("opt", {}).get("data_norm") for _, _, s in states if isinstance(s, dict)]
        norm = next((n for n in stored if n), "default")
    set_normalization(data, norm)
    _, held = stratified_holdout(data.train.targets, opt.fraction, opt.seed)
    sample = subset(data.train, held)
    rows = []
    for epoch, path, state in states:
        model = build_model(arch, num_classes=data.num_classes)
        load_weights(model, state, arch, source=f"snapshot '{path}'")
        model.to(device)
        row = {"epoch": epoch, "path": path}
        row.update(snapshot_metrics(model, sample, opt.kd_T, opt.knn, opt.batch_size))
        rows.append(row)
    ordered = rank(rows, opt.criterion, opt.min_acc_ratio)
    best = ordered[0]
    print(f"{arch} snapshots of '{opt.run_dir}' on {len(sample)} training images "
          f"({opt.fraction:g} of each class, seed {opt.seed}), T = {opt.kd_T:g}, criterion: {opt.criterion}")
    print(table(ordered))
    print(f"recommended teacher: epoch {best['epoch']} ({best['path']}); distil with "
          f"--path_t {opt.run_dir} --teacher_epochs {best['epoch']}")
    result = {"arch": arch, "criterion": opt.criterion, "rows": ordered, "recommended": best}
    if opt.json:
        with open(opt.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    run_cli(main)
