"""Shared by the method tests: typed method options, and a student, a teacher and a method built as
assembly.student builds them."""
import torch

from distiller_zoo import POST, REGISTRY, DistillContext, build_distiller
from engine.forward import forward
from models import build_model


def method_class(name_or_cls):
    return REGISTRY[name_or_cls] if isinstance(name_or_cls, str) else name_or_cls


def method_options(name_or_cls, **overrides):
    """The method's typed options (its declared defaults, then ``overrides``).

    An override the method does not declare raises TypeError: a test must not believe it set something the
    method never reads.
    """
    return method_class(name_or_cls).options_type()(**overrides)


def options_among(name_or_cls, **values):
    """The method's typed options taking from ``values`` only what it declares.

    For fixtures that hold one set of values for many methods (each method gets the part it reads).
    """
    cls = method_class(name_or_cls)
    declared = {o.name for o in cls.options}
    return method_options(cls, **{k: v for k, v in values.items() if k in declared})


def built_method(method, student="resnet8", teacher="resnet8", num_classes=10, batch_size=64, **overrides):
    """(student, eval-mode teacher, distiller), seeded, the method's modules sized from a dummy forward of the
    feature lists it declares (post-activation where it reads logits only)."""
    cls = method_class(method)
    torch.manual_seed(0)
    s = build_model(student, num_classes=num_classes)
    t = build_model(teacher, num_classes=num_classes).eval()
    probe = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feat_s = list(forward(s, probe, cls.student_features or POST).feats)
        feat_t = list(forward(t, probe, cls.teacher_features or POST).feats)
    ctx = DistillContext(method_options(method, **overrides), s, t, feat_s, feat_t, num_classes=num_classes,
                         batch_size=batch_size)
    return s, t, build_distiller(method, ctx)


def distill_one_epoch(data_root, tmp_path, *flags, epochs=1):
    """``train_student.py`` for ``epochs`` on the tiny CIFAR fixture, a random-weights resnet8 teacher and a resnet8
    student; returns its result and the last checkpoint."""
    import os

    import train_student
    from helper.checkpoint import save_checkpoint

    path_t = str(tmp_path / "resnet8_vanilla" / "ckpt_epoch_1.pth")
    if not os.path.exists(path_t):
        save_checkpoint({"model": build_model("resnet8", num_classes=100).state_dict()}, path_t)
    res = train_student.main(["--path_t", path_t, "--model_s", "resnet8", "--dataset", "cifar100", "--data_root",
                              data_root, "--save_dir", str(tmp_path), "--epochs", str(epochs), "--batch_size", "64",
                              "--device", "cpu", *flags])
    state = torch.load(os.path.join(res["run_dir"], "resnet8_last.pth"), weights_only=True)
    return res, state


def resumed_and_straight(data_root, tmp_path, *flags):
    """The last checkpoints of a 2-epoch run and of the same run stopped after epoch 1 and resumed with
    ``--resume auto`` (same teacher, same seed): ``(straight, resumed)``."""
    import shutil

    from helper.checkpoint import save_checkpoint

    teacher = tmp_path / "straight" / "resnet8_vanilla" / "ckpt_epoch_1.pth"
    torch.manual_seed(0)
    save_checkpoint({"model": build_model("resnet8", num_classes=100).state_dict()}, str(teacher))
    shutil.copytree(tmp_path / "straight" / "resnet8_vanilla", tmp_path / "resumed" / "resnet8_vanilla")
    _, straight = distill_one_epoch(data_root, tmp_path / "straight", *flags, epochs=2)
    distill_one_epoch(data_root, tmp_path / "resumed", *flags, epochs=1)
    _, resumed = distill_one_epoch(data_root, tmp_path / "resumed", *flags, "--resume", "auto", epochs=2)
    return straight, resumed
