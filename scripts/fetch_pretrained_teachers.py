"""Fetch RepDistiller's six published CIFAR-100 teachers into save/models/<arch>_vanilla/ckpt_epoch_240.pth.

Sources, in order: RepDistiller's original host (reported dead, its issue #47), then mdistiller's release of the
same checkpoints (``cifar_teachers.tar``). ``--tar PATH`` uses an archive you downloaded elsewhere, which is the
way on a machine without network. Files already present and loadable are skipped; every file is checked to load
(weights only, strict) into its architecture before it is put in place.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cells import published_teacher_path  # noqa: E402
from helper.checkpoint import load_checkpoint, load_weights  # noqa: E402
from models import build_model  # noqa: E402

TEACHERS = ["wrn_40_2", "resnet56", "resnet110", "resnet32x4", "vgg13", "ResNet50"]
ORIGINAL_URL = "http://shape2prog.csail.mit.edu/repo/{arch}_vanilla/ckpt_epoch_240.pth"
MDISTILLER_TAR_URL = "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar"


def target_path(save_dir: str, arch: str) -> str:
    # one place for the path rule: the table runner (experiments/) looks for the teachers there
    return published_teacher_path(save_dir, arch)


def check(path: str, arch: str) -> None:
    """Raises ValueError unless ``path`` loads with weights_only=True into ``arch`` (100 classes), strictly."""
    load_weights(build_model(arch, num_classes=100), load_checkpoint(path), arch, source=f"'{path}'")


def place(tmp_file: str, dest: str, arch: str) -> None:
    check(tmp_file, arch)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.replace(tmp_file, dest)  # callers create tmp_file in dest's folder, so this rename is atomic


def download(url: str, dest_dir: str, timeout: float) -> str:
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".download_")
    with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
        shutil.copyfileobj(r, f)
    return tmp


def extract_from_tar(tar_path: str, arch: str, dest: str) -> bool:
    """Find ``<arch>_vanilla/ckpt_epoch_240.pth`` anywhere in the archive; True when placed."""
    suffix = f"{arch}_vanilla/ckpt_epoch_240.pth"
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(suffix):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".extract_")
                with os.fdopen(fd, "wb") as f, tar.extractfile(member) as src:
                    shutil.copyfileobj(src, f)
                try:
                    place(tmp, dest, arch)
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
                return True
    return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--save_dir", default="./save")
    p.add_argument("--tar", default=None, help="a local copy of mdistiller's cifar_teachers.tar")
    p.add_argument("--models", default=",".join(TEACHERS))
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per network request")
    p.add_argument("--offline", action="store_true", help="never touch the network (use --tar or what exists)")
    args = p.parse_args(argv)
    archs = [a for a in args.models.split(",") if a]
    todo = []
    for arch in archs:
        dest = target_path(args.save_dir, arch)
        if os.path.isfile(dest):
            try:
                check(dest, arch)
                print(f"{arch}: present, loads into {arch} ({dest})")
                continue
            except ValueError as exc:
                print(f"{arch}: existing file does not load ({exc}); fetching again")
        todo.append(arch)
    if not todo:
        return 0
    tar_path = args.tar
    if tar_path is None and not args.offline:
        for arch in list(todo):
            dest = target_path(args.save_dir, arch)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:
                tmp = download(ORIGINAL_URL.format(arch=arch), os.path.dirname(dest), args.timeout)
                try:
                    place(tmp, dest, arch)
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
                print(f"{arch}: downloaded from RepDistiller's host")
                todo.remove(arch)
            except Exception as exc:  # noqa: BLE001
                print(f"{arch}: RepDistiller's host failed ({type(exc).__name__}); will try mdistiller's release")
        if todo:
            os.makedirs(args.save_dir, exist_ok=True)
            try:
                tar_path = download(MDISTILLER_TAR_URL, args.save_dir, args.timeout)
                os.replace(tar_path, os.path.join(args.save_dir, "cifar_teachers.tar"))
                tar_path = os.path.join(args.save_dir, "cifar_teachers.tar")
            except Exception as exc:  # noqa: BLE001
                tar_path = None
                print(f"mdistiller release failed ({type(exc).__name__}: {exc})")
    if todo and tar_path:
        for arch in list(todo):
            try:
                if extract_from_tar(tar_path, arch, target_path(args.save_dir, arch)):
                    print(f"{arch}: extracted from {tar_path}")
                    todo.remove(arch)
                else:
                    print(f"{arch}: not in {tar_path}")
            except ValueError as exc:
                print(f"{arch}: the archive's file does not load: {exc}")
    if todo:
        print(f"\nmissing: {', '.join(todo)}. Without network: download {MDISTILLER_TAR_URL} on a connected "
              f"machine, copy it here and run  bash scripts/fetch_pretrained_teachers.sh --tar cifar_teachers.tar"
              f"  (or train them: bash scripts/run_cifar_vanilla.sh).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
