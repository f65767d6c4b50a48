"""crd package: memory bank (both score paths), NCE loss, CRDLoss and the contrast-index sampler."""
import math
import types

import pytest
import torch
import torch.nn.functional as F

from crd import ContrastLoss, ContrastMemory, ContrastSampler, CRDLoss, Embed


def unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def make_memory(path, N=20, D=8, K=5, T=0.07, m=0.5, seed=0):
    torch.manual_seed(seed)
    return ContrastMemory(D, N, K, T, m, score_path=path).double()


# ------------------------------------------------------------------------------------------ memory
def test_memory_init_and_buffers():
    torch.manual_seed(0)
    mem = ContrastMemory(128, 500, 16)
    stdv = 1 / math.sqrt(128 / 3)
    for bank in (mem.memory_v1, mem.memory_v2):
        assert bank.shape == (500, 128)
        assert float(bank.min()) >= -stdv and float(bank.max()) <= stdv
        assert abs(float(bank.std()) - stdv / math.sqrt(3)) < 0.01  # U(-a, a) has std a/sqrt(3)
    assert mem.params.tolist()[2:4] == [-1.0, -1.0]
    assert set(mem.state_dict()) == {"params", "memory_v1", "memory_v2"}
    assert list(mem.parameters()) == []


@pytest.mark.parametrize("path", ["matmul", "gather"])
def test_memory_outputs_z_and_update_match_formula(path):
    N, D, K, B, m = 20, 8, 5, 4, 0.5
    mem = make_memory(path, N, D, K, m=m)
    T = float(mem.params[1])
    old1, old2 = mem.memory_v1.clone(), mem.memory_v2.clone()
    v1, v2 = unit(B, D, seed=1), unit(B, D, seed=2)
    y = torch.tensor([3, 7, 11, 0])
    idx = torch.randint(0, N, (B, K + 1), generator=torch.Generator().manual_seed(3))
    idx[:, 0] = y
    out_v1, out_v2 = mem(v1, v2, y, idx)
    assert out_v1.shape == (B, K + 1, 1) and out_v2.shape == (B, K + 1, 1)

    e1 = torch.empty(B, K + 1, dtype=torch.float64)
    e2 = torch.empty(B, K + 1, dtype=torch.float64)
    for b in range(B):
        for j in range(K + 1):
            e1[b, j] = math.exp(float(old2[idx[b, j]] @ v1[b]) / T)  # student anchor vs teacher bank
            e2[b, j] = math.exp(float(old1[idx[b, j]] @ v2[b]) / T)
    z1, z2 = float(e1.mean()) * N, float(e2.mean()) * N
    assert mem.params[2].item() == pytest.approx(z1, rel=1e-5)
    assert mem.params[3].item() == pytest.approx(z2, rel=1e-5)
    assert torch.allclose(out_v1.squeeze(2), e1 / mem.params[2].item(), rtol=1e-6)
    assert torch.allclose(out_v2.squeeze(2), e2 / mem.params[3].item(), rtol=1e-6)

    others = torch.ones(N, dtype=torch.bool)
    others[y] = False
    for bank, old, v in ((mem.memory_v1, old1, v1), (mem.memory_v2, old2, v2)):
        want = old[y] * m + v * (1 - m)
        want = want / want.norm(dim=1, keepdim=True)
        assert torch.allclose(bank[y], want, rtol=1e-10, atol=1e-12)
        assert torch.allclose(bank[y].norm(dim=1), torch.ones(B, dtype=torch.float64))
        assert torch.equal(bank[others], old[others])

    # second batch: Z stays what the first batch set
    z_before = mem.params.clone()
    mem(unit(B, D, seed=4), unit(B, D, seed=5), torch.tensor([1, 2, 5, 6]), idx)
    assert torch.equal(mem.params, z_before)


def test_memory_fast_path_equals_reference_path():
    N, D, K, B = 300, 16, 50, 8
    fast, ref = make_memory("matmul", N, D, K), make_memory("gather", N, D, K)
    assert torch.equal(fast.memory_v1, ref.memory_v1)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        y = torch.randperm(N, generator=gen)[:B]
        idx = torch.randint(0, N, (B, K + 1), generator=gen)
        idx[:, 0] = y
        grads = []
        outs = []
        for mem in (fast, ref):
            v1 = unit(B, D, seed=10 + step).requires_grad_()
            v2 = unit(B, D, seed=20 + step).requires_grad_()
            a, b = mem(v1, v2, y, idx)
            (a.pow(2).sum() + 3 * b.sum()).backward()
            outs.append((a.detach(), b.detach()))
            grads.append((v1.grad, v2.grad))
        for x, z in zip(outs[0] + grads[0], outs[1] + grads[1]):
            assert torch.allclose(x, z, rtol=1e-9, atol=1e-12)
        assert torch.allclose(fast.memory_v1, ref.memory_v1) and torch.allclose(fast.memory_v2, ref.memory_v2)
        assert torch.allclose(fast.params, ref.params, rtol=1e-12)


def test_memory_fast_path_equals_reference_path_float32():
    torch.manual_seed(0)
    fast = ContrastMemory(128, 2000, 1000)
    ref = ContrastMemory(128, 2000, 1000, score_path="gather")
    ref.load_state_dict(fast.state_dict())
    y = torch.randperm(2000)[:64]
    idx = torch.randint(0, 2000, (64, 1001))
    v1, v2 = unit(64, 128, dtype=torch.float32), unit(64, 128, seed=1, dtype=torch.float32)
    a1, b1 = fast(v1, v2, y, idx)
    a2, b2 = ref(v1, v2, y, idx)
    assert torch.allclose(a1, a2, rtol=1e-4) and torch.allclose(b1, b2, rtol=1e-4)


def test_memory_without_idx_draws_uniform_rows_with_the_positive_first():
    mem = make_memory("matmul", N=30, K=7)
    old2 = mem.memory_v2.clone()
    v1, v2 = unit(3, 8, seed=1), unit(3, 8, seed=2)
    y = torch.tensor([4, 9, 2])
    out_v1, _ = mem(v1, v2, y)
    T, Z = float(mem.params[1]), float(mem.params[2])
    pos = torch.exp((old2[y] * v1).sum(1) / T) / Z
    assert out_v1.shape == (3, 8, 1)
    assert torch.allclose(out_v1[:, 0, 0], pos)


def test_memory_rejects_unknown_path():
    with pytest.raises(ValueError):
        ContrastMemory(8, 10, 3, score_path="fast")


# ------------------------------------------------------------------------------------------ losses
def test_contrast_loss_matches_formula():
    torch.manual_seed(0)
    B, K, n_data = 4, 6, 50
    x = torch.rand(B, K + 1, 1, dtype=torch.float64) * 0.5
    c = K / n_data
    want = 0.0
    for b in range(B):
        p = float(x[b, 0, 0])
        want -= math.log(p / (p + c + 1e-7))
        for j in range(1, K + 1):
            want -= math.log(c / (float(x[b, j, 0]) + c + 1e-7))
    want /= B
    got = ContrastLoss(n_data)(x)
    assert got.shape == ()
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_embed_is_linear_then_l2_normalised():
    emb = Embed(6, 4)
    x = torch.randn(3, 6, 1, 1)
    h = x.reshape(3, 6) @ emb.linear.weight.t() + emb.linear.bias
    assert torch.allclose(emb(x), h / h.norm(dim=1, keepdim=True))
    assert set(emb.state_dict()) == {"linear.weight", "linear.bias"}


def crd_opt(**kw):
    base = dict(s_dim=10, t_dim=12, feat_dim=8, n_data=40, nce_k=6, nce_t=0.07, nce_m=0.5)
    base.update(kw)
    return types.SimpleNamespace(**base)


def test_crd_loss_matches_composition_and_gradients():
    torch.manual_seed(0)
    crit = CRDLoss(crd_opt()).double()
    mem = crit.contrast
    old1, old2 = mem.memory_v1.clone(), mem.memory_v2.clone()
    f_s = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    f_t = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([1, 5, 9, 30])
    cidx = torch.randint(0, 40, (4, 7))
    cidx[:, 0] = idx
    loss = crit(f_s, f_t, idx, cidx)

    with torch.no_grad():
        e_s = F.normalize(f_s @ crit.embed_s.linear.weight.t() + crit.embed_s.linear.bias, dim=1)
        e_t = F.normalize(f_t @ crit.embed_t.linear.weight.t() + crit.embed_t.linear.bias, dim=1)
        T = float(mem.params[1])
        s_scores = torch.exp(torch.einsum("bkd,bd->bk", old2[cidx], e_s) / T)
        t_scores = torch.exp(torch.einsum("bkd,bd->bk", old1[cidx], e_t) / T)
        z_s, z_t = s_scores.mean() * 40, t_scores.mean() * 40
        nce = ContrastLoss(40)
        want = nce(s_scores / z_s) + nce(t_scores / z_t)
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-9)
    loss.backward()
    assert f_s.grad is not None and f_t.grad is not None  # CRDLoss itself does not detach; the distiller does
    assert all(p.grad is not None for p in crit.embed_s.parameters())
    assert all(p.grad is not None for p in crit.embed_t.parameters())


# ------------------------------------------------------------------------------------------ sampler
def unbalanced_targets():
    # class sizes 3, 5, 8, 12, 2 -> 30 samples, interleaved
    sizes = [3, 5, 8, 12, 2]
    t = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    return t[torch.randperm(t.numel(), generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("mode", ["exact", "relax"])
def test_sampler_structure(mode):
    targets = unbalanced_targets()
    k = 15  # <= 30 - 12 = 18 negatives of the largest class: never with replacement
    s = ContrastSampler(targets, k, mode)
    assert not s.any_replace
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        index = torch.randperm(30, generator=gen)[:16]
        y = targets[index]
        out = s.sample(index, y, generator=gen)
        assert out.shape == (16, k + 1) and out.dtype == torch.long
        assert bool((targets[out[:, 1:]] != y.unsqueeze(1)).all())
        assert bool((out >= 0).all()) and bool((out < 30).all())
        if mode == "exact":
            assert torch.equal(out[:, 0], index)
        else:
            assert torch.equal(targets[out[:, 0]], y)
        for row in out[:, 1:]:
            assert row.unique().numel() == k


def test_sampler_relax_positive_is_uniform_over_the_class():
    targets = unbalanced_targets()
    s = ContrastSampler(targets, 4, "relax")
    anchor = int((targets == 3).nonzero()[0])
    members = (targets == 3).nonzero().flatten().tolist()
    gen = torch.Generator().manual_seed(0)
    out = s.sample(torch.full((6000,), anchor), torch.full((6000,), 3), generator=gen)
    counts = torch.bincount(out[:, 0], minlength=30)
    assert set(counts.nonzero().flatten().tolist()) == set(members)
    assert float(counts[members].float().std() / counts[members].float().mean()) < 0.1


def test_sampler_negatives_are_uniform():
    targets = unbalanced_targets()
    s = ContrastSampler(targets, 10)
    gen = torch.Generator().manual_seed(0)
    cls = 2
    anchors = (targets == cls).nonzero().flatten()
    index = anchors.repeat(400)
    out = s.sample(index, targets[index], generator=gen)
    counts = torch.bincount(out[:, 1:].flatten(), minlength=30).float()
    cand = (targets != cls)
    assert float(counts[~cand].sum()) == 0
    expected = index.numel() * 10 / int(cand.sum())
    assert float((counts[cand] - expected).abs().max() / expected) < 0.08


def test_sampler_replacement_rule_per_class():
    targets = unbalanced_targets()  # negatives per class: 27, 25, 22, 18, 28
    s = ContrastSampler(targets, 24)
    assert s.any_replace and not s.all_replace
    gen = torch.Generator().manual_seed(0)
    index = torch.arange(30).repeat(4)
    y = targets[index]
    out = s.sample(index, y, generator=gen)
    assert bool((targets[out[:, 1:]] != y.unsqueeze(1)).all())
    saw_repeat = False
    for row, c in zip(out, y.tolist()):
        n_unique = row[1:].unique().numel()
        if c in (2, 3):  # 22 and 18 negatives < 24: with replacement
            saw_repeat |= n_unique < 24
            assert n_unique <= (22 if c == 2 else 18)
        else:
            assert n_unique == 24
    assert saw_repeat
    s_all = ContrastSampler(targets, 40)
    assert s_all.all_replace
    out = s_all.sample(index, y, generator=gen)
    assert out.shape == (120, 41) and bool((targets[out[:, 1:]] != y.unsqueeze(1)).all())


def test_sampler_determinism_with_generator():
    targets = unbalanced_targets()
    for mode in ("exact", "relax"):
        s = ContrastSampler(targets, 12, mode)
        index = torch.arange(10)
        a = s.sample(index, targets[index], generator=torch.Generator().manual_seed(7))
        b = s.sample(index, targets[index], generator=torch.Generator().manual_seed(7))
        c = s.sample(index, targets[index], generator=torch.Generator().manual_seed(8))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampler_errors():
    with pytest.raises(ValueError, match="same class"):
        ContrastSampler(torch.zeros(10, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="mode"):
        ContrastSampler(torch.arange(10) % 2, 3, mode="approx")
    with pytest.raises(ValueError):
        ContrastSampler(torch.arange(10) % 3, 3, num_classes=2)
    # an empty class in num_classes is fine
    s = ContrastSampler(torch.arange(10) % 2, 3, num_classes=4)
    assert s.sample(torch.tensor([0, 1]), torch.tensor([0, 1])).shape == (2, 4)
