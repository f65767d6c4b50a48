"""--compile, --amp, --channels_last and the sharded batches: what they change and what they must not."""
import copy
from types import SimpleNamespace

import pytest
import torch

from dataset.core import TensorImageSet
import distiller_zoo
import engine.fit as fit_module
from distiller_zoo import build_distiller
from distiller_zoo.base import Batch
from engine.compile import compile_mode, compile_network, uses_cuda_graphs
from engine.fit import build_optimizer, fit
from engine.step import StudentStep, loss_weights, shard_loss_scale, train_step
from helper.distributed import shard_bounds
from helper.run import place_model
from models import build_model
from tests.engine.built import method_context, student_options

CPU = torch.device("cpu")


def options(**kw):
    base = dict(gamma=0.1, alpha=0.9, beta=0.0, kd_T=4.0, learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
                nesterov=False, amp=False, channels_last=None, compile=False, compile_mode="auto", seed=0,
                data_seed=0, batch_size=8, epochs=2, lr_decay_epochs="150", lr_decay_rate=0.1, print_freq=100,
                save_freq=0, test_batch_size=16, init_epochs=0, resume=None, lr_scale="linear", sync_bn=False,
                overwrite=False, keep_checkpoints="all", device="cpu")
    base.update(kw)
    return student_options(**base)


def built(method, opt, student, teacher, **kw):
    return build_distiller(method, method_context(distiller_zoo.REGISTRY[method], opt, student, teacher, **kw))


def kd_setup(opt, seed=0):
    torch.manual_seed(seed)
    student = build_model("resnet8", num_classes=10)
    teacher = build_model("resnet8", num_classes=10).eval()
    distiller = built("kd", opt, student, teacher, num_classes=10)
    return student, teacher, distiller


def batch_of(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g), torch.arange(n))


def tiny_set(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return TensorImageSet(x, torch.arange(n) % 10, [0.5] * 3, [0.25] * 3)


@pytest.mark.slow
def test_compiled_step_gives_the_eager_loss_and_update():
    opt = options()
    student, teacher, distiller = kd_setup(opt)
    student_c, teacher_c, distiller_c = copy.deepcopy((student, teacher, distiller))
    opt_c = options(compile=True)
    compile_network(student_c, opt_c, CPU)
    compile_network(teacher_c, opt_c, CPU)
    sgd = build_optimizer(student, distiller, opt, CPU)
    sgd_c = build_optimizer(student_c, distiller_c, opt_c, CPU)
    w = loss_weights(opt)
    for i in range(2):
        b = batch_of(seed=i)
        _, out, _, loss = train_step(b, 1, student, distiller, sgd, opt, CPU, w, teacher)
        _, out_c, _, loss_c = train_step(b, 1, student_c, distiller_c, sgd_c, opt_c, CPU, w, teacher_c)
        torch.testing.assert_close(loss_c, loss, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out_c.logits, out.logits, rtol=1e-4, atol=1e-4)
    for (k, p), (_, p_c) in zip(student.state_dict().items(), student_c.state_dict().items()):
        torch.testing.assert_close(p_c, p, rtol=1e-4, atol=1e-5, msg=k)
    # the compiled module keeps RepDistiller's state-dict keys (no _orig_mod. prefix)
    assert list(student_c.state_dict()) == list(student.state_dict())


@pytest.mark.slow
def test_last_partial_batch_is_compiled_once_not_every_epoch(tmp_path):
    from torch._dynamo.utils import counters

    opt = options(compile=True, epochs=3, batch_size=8)
    student, _, _ = kd_setup(opt)
    distiller = built("ce", opt, student, None, num_classes=10)
    # 20 training images at batch 8: shapes 8, 8, 4 every epoch; 10 test images
    data = SimpleNamespace(train=tiny_set(20), test=tiny_set(10, seed=1), num_classes=10)
    graphs = []
    real_validate_epochs = []

    original = fit_module.finish_epoch

    def spy(run, epoch, *args, **kw):
        original(run, epoch, *args, **kw)
        graphs.append(counters["stats"]["unique_graphs"])
        real_validate_epochs.append(epoch)

    fit_module.finish_epoch = spy
    try:
        torch._dynamo.reset()
        counters.clear()
        fit(opt, data, student, distiller, str(tmp_path), "resnet8", CPU, quiet=True)
    finally:
        fit_module.finish_epoch = original
    assert real_validate_epochs == [1, 2, 3]
    # epoch 1 compiles the full batch, the partial one and evaluation; later epochs reuse them
    assert graphs[0] >= 2 and graphs[1] == graphs[0] and graphs[2] == graphs[0]


def test_compile_mode_choice():
    assert compile_mode(options(), CPU) is None
    assert compile_mode(options(compile=True), CPU) == "default"
    assert compile_mode(options(compile=True), torch.device("cuda")) == "reduce-overhead"
    assert compile_mode(options(compile=True, compile_mode="max-autotune"), CPU) == "max-autotune"
    assert uses_cuda_graphs(options(compile=True), torch.device("cuda"))
    assert not uses_cuda_graphs(options(compile=True), CPU)


def test_amp_runs_the_networks_in_bf16_on_cpu_and_fp32_stays_default():
    for amp, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        opt = options(amp=amp)
        student, teacher, distiller = kd_setup(opt)
        sgd = build_optimizer(student, distiller, opt, CPU)
        _, out, terms, loss = train_step(batch_of(), 1, student, distiller, sgd, opt, CPU, loss_weights(opt), teacher)
        assert out.logits.dtype == dtype
        assert torch.isfinite(loss) and student.conv1.weight.dtype == torch.float32


def test_fp32_step_is_unchanged_by_the_step_module_and_inference_mode_teacher():
    """The loop's step equals the plain formula computed by hand: CE + KL with the teacher under no_grad."""
    import torch.nn.functional as F

    opt = options()
    student, teacher, distiller = kd_setup(opt)
    ref_student = copy.deepcopy(student)
    b = batch_of()
    sgd = build_optimizer(student, distiller, opt, CPU)
    _, _, _, loss = train_step(b, 1, student, distiller, sgd, opt, CPU, loss_weights(opt), teacher)
    with torch.no_grad():
        z_t = teacher(b.x)
    z_s = ref_student(b.x)
    T = 4.0
    kl = F.kl_div(F.log_softmax(z_s / T, 1), F.softmax(z_t / T, 1), reduction="sum") * T * T / b.x.shape[0]
    expected = 0.1 * F.cross_entropy(z_s, b.y) + 0.9 * kl
    assert torch.equal(loss.detach(), expected.detach())
    ref_sgd = torch.optim.SGD(ref_student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    expected.backward()
    ref_sgd.step()
    for p, q in zip(student.parameters(), ref_student.parameters()):
        assert torch.equal(p, q)


def test_channels_last_flag_places_models_and_inputs():
    opt = options(channels_last=True)
    student, teacher, distiller = kd_setup(opt)
    student = place_model(student, CPU, opt)
    assert student.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not place_model(build_model("resnet8", num_classes=10), CPU, options()).conv1.weight.is_contiguous(
        memory_format=torch.channels_last)
    sgd = build_optimizer(student, distiller, opt, CPU)
    b, _, _, _ = train_step(batch_of(), 1, student, distiller, sgd, opt, CPU, loss_weights(opt), teacher)
    assert b.x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("n,batch,world", [(20, 4, 2), (21, 4, 2), (17, 3, 3), (9, 4, 2)])
def test_shards_of_a_global_batch_are_the_single_process_batch(n, batch, world):
    data = tiny_set(n)
    single = list(data.train_batches(batch * world, seed=3, epoch=2))
    shards = [list(data.train_batches(batch, seed=3, epoch=2, rank=r, world_size=world)) for r in range(world)]
    expected_steps = [b for b in single if b.y.numel() >= world]
    assert all(len(s) == len(expected_steps) == data.num_batches(batch, world_size=world) for s in shards)
    for i, full in enumerate(expected_steps):
        parts = [s[i] for s in shards]
        assert torch.equal(torch.cat([p.x for p in parts]), full.x)
        assert torch.equal(torch.cat([p.index for p in parts]), full.index)
        assert torch.equal(parts[0].global_index, full.index)
        # a per-sample quantity: each shard's mean, scaled, then averaged over processes (as DDP averages
        # gradients) must give the global batch's mean, also for uneven shards
        value = lambda b: b.index.double() ** 2  # noqa: E731
        ddp_mean = sum(shard_loss_scale(p, world) * value(p).mean() for p in parts) / world
        assert ddp_mean.item() == pytest.approx(value(full).mean().item(), rel=1e-12)
        assert [p.shard for p in parts] == [shard_bounds(full.y.numel(), r, world) for r in range(world)]


def test_eval_shards_cover_the_split_once():
    data = tiny_set(23)
    seen = torch.cat([b.index for r in range(3) for b in data.eval_batches(5, rank=r, world_size=3)])
    assert torch.equal(seen, torch.arange(23))


def test_student_step_module_holds_student_and_method_parameters():
    opt = options(beta=1.0)
    student, teacher, _ = kd_setup(opt)
    probe = torch.randn(2, 3, 32, 32)
    feat_s, _ = student(probe, is_feat=True)
    feat_t, _ = teacher(probe, is_feat=True)
    distiller = built("hint", opt, student, teacher, feat_s=feat_s, feat_t=feat_t, num_classes=10)
    step = StudentStep(student, distiller)
    names = {n.split(".")[0] for n, _ in step.named_parameters()}
    assert names == {"student", "distiller"}
    n_regressor = sum(p.numel() for p in distiller.parameters())
    assert n_regressor > 0
    assert sum(p.numel() for p in step.parameters()) == sum(p.numel() for p in student.parameters()) + n_regressor
