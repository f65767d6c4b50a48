"""Every --distill value through train_student.py, on pairs of different widths and depths."""
import functools
import os
import re

import numpy as np
import pytest
import torch

import distiller_zoo
import train_student
from assembly.options import parse_student_options
from dataset import DataBundle, TensorImageSet
from dataset.cifar import write_cifar_format
from distiller_zoo import POST
from engine.forward import forward
from helper.checkpoint import save_checkpoint
from helper.logging import read_metrics
from models import build_model

METHODS = [m for m in distiller_zoo.available() if m not in ("ce", "byot")]
PAIRS = [("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"), ("vgg13", "vgg8"), ("ResNet50", "MobileNetV2"),
         ("resnet32x4", "ShuffleV2")]
# the pairs whose student and teacher have equal widths stage by stage
EQUAL_WIDTHS = {("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"), ("vgg13", "vgg8")}
# methods that need equal widths (RepDistiller's FSP and KD-SVD compare the stages' maps, PAD-L2 the pooled
# features directly), and the message that refuses any other pair
NEEDS_EQUAL_WIDTHS = {"fsp": "FSP|fsp", "kdsvd": "kdsvd needs equal channel counts",
                      "pad": "--distill pad compares the pooled features directly"}
# the methods with an init stage (--init_epochs)
TWO_STAGE = ("abound", "factor", "fsp", "pad", "sskd")


@functools.lru_cache(maxsize=None)
def _calibrated_state(name):
    torch.manual_seed(0)
    model = build_model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, 3, 32, 32))
    return {k: v.clone() for k, v in model.state_dict().items()}


def calibrated_teacher(name):
    """A random-weight teacher whose BN statistics come from data, so its features are O(1) in eval mode
    as a trained teacher's are (default running stats let activations grow with depth). Calibrated once per
    architecture (the forwards cost more than the tests that use it), a fresh copy each call."""
    model = build_model(name)
    model.load_state_dict(_calibrated_state(name))
    return model.eval()


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """40 training images of 40 classes, 20 test images, CIFAR-100 format; teachers with random weights."""
    root = tmp_path_factory.mktemp("zoo")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    y = np.arange(60) % 40
    write_cifar_format(str(root / "data"), "cifar100", x[:40], y[:40], x[40:], y[40:])
    for t in {p[0] for p in PAIRS}:
        save_checkpoint({"model": calibrated_teacher(t).state_dict(), "epoch": 240},
                        str(root / "save" / "models" / f"{t}_vanilla" / "ckpt_epoch_240.pth"))
    return root


def _args(root, teacher, student, method):
    return ["--path_t", str(root / "save" / "models" / f"{teacher}_vanilla" / "ckpt_epoch_240.pth"),
            "--model_s", student, "--distill", method, "--dataset", "cifar100", "--data_root", str(root / "data"),
            "--save_dir", str(root / "save"), "--epochs", "1", "--init_epochs", "1", "--batch_size", "20",
            "--device", "cpu", "--nce_k", "8", "--feat_dim", "16", "--save_freq", "0",
            "--trial", f"{teacher}-{method}"]


# SemCKD builds a projection per student x teacher stage pair whose 3x3 conv has (2 x teacher width)^2 x 9 weights:
# with ResNet50's 2048-wide stages that is ~800M parameters, too big for a CPU test
SECOND_PAIR = {"semckd": ("wrn_40_2", "wrn_16_2")}


def _pairs_for(i):
    # every method on the first pair, plus one other pair in rotation: all five pairs are covered
    return [PAIRS[0], SECOND_PAIR.get(METHODS[i], PAIRS[1 + i % 4])]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_end_to_end(micro, method):
    i = METHODS.index(method)
    for teacher, student in _pairs_for(i):
        args = _args(micro, teacher, student, method)
        if method in NEEDS_EQUAL_WIDTHS and (teacher, student) not in EQUAL_WIDTHS:
            with pytest.raises(ValueError, match=NEEDS_EQUAL_WIDTHS[method]):
                train_student.main(args)
            continue
        res = train_student.main(args)
        # the teacher's part may carry a tag (OFD's train-mode teacher: _ep240_bntrainalways)
        run = [d for d in os.listdir(micro / "save" / "student_model")
               if re.fullmatch(f"S_{student}_T_{teacher}(_[a-z0-9]+)*_cifar100_{method}_.*{teacher}-{method}", d)]
        assert len(run) == 1
        rows = read_metrics(micro / "save" / "student_model" / run[0])
        train_rows = [r for r in rows if r.get("stage", "train") == "train"]
        assert len(train_rows) == 1 and np.isfinite(train_rows[0]["train_loss"])
        assert 0 <= res["last_acc"] <= 100
        init_rows = [r for r in rows if r.get("stage") == "init"]
        # the two-stage methods ran their init stage first
        assert (len(init_rows) == 1) == (method in TWO_STAGE)


def _fixed_batch_setup(method, teacher_name, student_name):
    torch.manual_seed(0)
    # the loss weights come resolved: the method's -r/-a/-b when none is given; batches of 8
    opt = parse_student_options(["--distill", method, "--model_s", student_name, "--path_t", "x",
                                 "--nce_k", "8", "--feat_dim", "16", "--model_t", teacher_name, "--batch_size", "8"])
    imgs = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    split = TensorImageSet(imgs, torch.arange(24) % 12, (0.5,) * 3, (0.25,) * 3)
    data = DataBundle("cifar100", split, split, 100)
    cls = distiller_zoo.REGISTRY[method]
    teacher = calibrated_teacher(teacher_name)
    torch.manual_seed(1)
    student = build_model(student_name)
    probe = torch.randn(2, 3, 32, 32)
    student.eval()
    with torch.no_grad():
        fs = forward(student, probe, cls.student_features or POST).feats
        ft = forward(teacher, probe, cls.teacher_features or POST).feats
    ctx = distiller_zoo.DistillContext(cls.select_options(opt), student, teacher, list(fs), list(ft),
                                       train_targets=split.targets, num_classes=100, student_name=student_name,
                                       batch_size=opt.batch_size)
    return opt, data, teacher, student, cls(ctx)


def method_batch(d, data):
    """8 rows for the networks, as the engine gives them: 8 images (with their strong view for MLKD), or 2 expanded
    (SSKD: four rotations of each); returns the batch and the networks' input."""
    batch = next(data.train.train_batches(8 if d.batch_expansion is None else 2, 0, 1, augment=False,
                                          strong_view=d.strong_view))
    return batch, (batch.x if d.batch_expansion is None else d.batch_expansion.expand(batch.x))


def method_outputs(d, model, batch, x, kind):
    """``model``'s outputs as the engine hands them to ``d``: on its input, and on the strong view if it reads one."""
    out = forward(model, x, kind)
    if d.strong_view:
        out.strong = forward(model, batch.x_strong, kind)
    return out


@pytest.mark.parametrize("method", METHODS)
def test_loss_decreases_on_a_fixed_batch(method):
    opt, data, teacher, student, d = _fixed_batch_setup(method, "resnet32x4", "resnet8x4")
    batch, x = method_batch(d, data)
    # the teacher is fixed and so is the batch: its outputs once, not every step (most of the test's time)
    with torch.no_grad():
        out_t = method_outputs(d, teacher, batch, x, d.teacher_features)
    init = d.init_modules(student)
    if init is not None and method in ("abound", "fsp"):
        # the method's distillation happens in the init stage (RepDistiller): train that
        params = torch.nn.ModuleList(init).parameters()
        loss_fn = lambda: d.init_loss(forward(student, x, d.student_features), out_t, batch)  # noqa: E731
        student.eval()
        lr = 0.002  # FSP/AB init losses are unnormalised (O(10)); 0.01 with momentum overshoots in 12 steps
    else:
        # WTTM's sample weights (~2.5 at --ttm_l 0.1) times its -b 45 give the logits ~100x KD's gradient: 0.01 with
        # momentum overshoots on one fixed batch
        lr = 0.002 if method == "wttm" else 0.01
        if init is not None:  # factor: its paraphraser is trained first, as the init stage does
            popt = torch.optim.SGD(torch.nn.ModuleList(init).parameters(), lr=0.01)
            for _ in range(3):
                popt.zero_grad()
                d.init_loss(forward(student, x, d.student_features), out_t, batch).backward()
                popt.step()
        params = list(student.parameters()) + [p for m in d.trainable_modules() for p in m.parameters()]
        weights = {"ce": opt.gamma, "kl": opt.alpha, "kd": opt.beta}  # the method's recipe

        def loss_fn():
            terms = d.loss(method_outputs(d, student, batch, x, d.student_features), out_t, batch, 1)
            return sum(weights[k] * v for k, v in terms.items())
        student.train()
    optim = torch.optim.SGD(params, lr=lr, momentum=0.9)
    losses = []
    for _ in range(12):
        loss = loss_fn()
        assert torch.isfinite(loss)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < losses[0], losses
    for p in teacher.parameters():
        assert p.grad is None


def test_nce_k_too_large_stops_before_training(micro):
    args = _args(micro, "resnet32x4", "resnet8x4", "crd")
    args[args.index("--nce_k") + 1] = "100000"
    with pytest.raises(ValueError, match="nce_k"):
        train_student.main(args)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_student_gradients_on_option_a_resnets(method):
    # CheckpointKD's resnet110_a -> resnet32_a in miniature: the feature contract of models/resnet_a.py serves every
    # method (its init stage for the two-stage ones), and the gradients reach the student
    opt, data, teacher, student, d = _fixed_batch_setup(method, "resnet20_a", "resnet14_a")
    batch, x = method_batch(d, data)
    student.train()
    out_s = method_outputs(d, student, batch, x, d.student_features)
    with torch.no_grad():
        out_t = method_outputs(d, teacher, batch, x, d.teacher_features)
    if method in ("abound", "fsp"):
        loss = d.init_loss(out_s, out_t, batch)
    else:
        weights = {"ce": opt.gamma, "kl": opt.alpha, "kd": opt.beta}
        loss = sum(weights[k] * v for k, v in d.loss(out_s, out_t, batch, 1).items())
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
