"""CRD at ImageNet scale: negatives drawn with replacement (the ImageNet samplers' rule, --nce_replace) and memory
banks stored in bf16 (--nce_bank_dtype)."""
import torch

from crd.memory import ContrastMemory
from crd.sampler import ContrastSampler


def test_with_replacement_negatives_are_uniform_over_the_other_classes():
    targets = torch.tensor([0, 0, 0, 1, 1, 2])  # class 0's negatives: samples 3, 4, 5
    sampler = ContrastSampler(targets, k=30000, replace=True)
    draw = sampler.sample(torch.tensor([1]), torch.tensor([0]), generator=torch.Generator().manual_seed(0))
    assert draw.shape == (1, 30001) and draw[0, 0] == 1
    counts = torch.bincount(draw[0, 1:], minlength=6)
    assert counts[:3].tolist() == [0, 0, 0]
    # 10,000 expected each; five standard deviations of a binomial(30000, 1/3) are ~408
    assert ((counts[3:] - 10000).abs() < 408).all(), counts
    # without replacement, k may not exceed the 3 negatives; with it, it may
    assert not ContrastSampler(targets, k=3).any_replace and sampler.all_replace


def _memory(dtype):
    torch.manual_seed(0)
    return ContrastMemory(8, 50, K=6, T=0.07, momentum=0.5, bank_dtype=dtype)


def test_a_bf16_bank_starts_from_the_float32_one_rounded_and_scores_in_float32():
    full, half = _memory(torch.float32), _memory(torch.bfloat16)
    assert half.memory_v1.dtype == half.memory_v2.dtype == torch.bfloat16
    assert torch.equal(half.memory_v1, full.memory_v1.to(torch.bfloat16))
    g = torch.Generator().manual_seed(1)
    v1 = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1).requires_grad_()
    v2 = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    y = torch.tensor([0, 7, 9, 30])
    idx = torch.randint(0, 50, (4, 7), generator=g)
    idx[:, 0] = y
    out_full = full(v1, v2, y, idx)[0]
    out_half = half(v1, v2, y, idx)[0]
    assert out_half.dtype == torch.float32
    # the bank's bf16 rounding (8 bits) enters the score before exp(score / 0.07): a few percent at most
    torch.testing.assert_close(out_half, out_full, rtol=0.1, atol=0)
    out_half.sum().backward()
    assert v1.grad is not None and torch.isfinite(v1.grad).all()
    # updated rows are stored in bf16, unit length up to bf16 rounding
    norms = half.memory_v1[y].float().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(4), atol=1e-2, rtol=0)
    assert half.state_dict()["memory_v2"].dtype == torch.bfloat16
