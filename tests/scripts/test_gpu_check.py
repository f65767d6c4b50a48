"""scripts/gpu_check.sh --device cpu --quick: the GPU verification's plumbing, one report, a failing exit status."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTIONS = ["## teacher", "## (a) every method, one epoch", "## (b) five trials per process", "## (c) benchmark",
            "## (d) torchrun against one process", "## (e) fp32 vs bf16 vs compile"]


def gpu_check(out, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), "--device", "cpu", "--quick",
                           "--out", str(out), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


# what the quick CPU check runs of section (a): every method's epoch on a CPU is tests/cli/test_zoo_end_to_end.py's,
# and the GPU run (no --methods) checks them all. Eight methods took 10 of this test's 11 minutes here.
QUICK_METHODS = ("kd",)


@pytest.mark.slow
def test_quick_cpu_check_writes_one_report(tmp_path):
    code, output = gpu_check(tmp_path / "check", "--methods", ",".join(QUICK_METHODS))
    report = tmp_path / "check" / "report.md"
    assert f"wrote {report}" in output
    text = report.read_text()
    assert code == 0, text
    assert "Result: **PASS**" in text
    positions = [text.index(heading) for heading in SECTIONS]
    assert positions == sorted(positions)
    for method in QUICK_METHODS:
        assert re.search(rf"^\| {method} \| \S+ \| PASS \|", text, re.M), method
    # the quick run's sections (b) and (c) take kd and kd, crd of the GPU run's kd, crd and five methods
    assert re.search(r"^\| kd \| PASS \| \d+ \| 5 \|", text, re.M)
    for method in ("kd", "crd"):
        assert f"| {method} | ours |" in text and f"| {method} | dataloader |" in text
        assert re.search(rf"^- target {method} ours >= (8|10)x dataloader: (MET|NOT MET)", text, re.M), method
    assert re.search(r"^- target KD resnet8 -> resnet8 240 epochs <= 5 min: (MET|NOT MET)", text, re.M)
    assert "| torchrun == one process | PASS |" in text
    assert "| fp32 |" in text and "| bf16 |" in text


@pytest.mark.slow
def test_a_failing_check_makes_the_exit_status_non_zero(tmp_path):
    code, output = gpu_check(tmp_path / "check", "--methods", "kd,no_such_method", "--sections", "methods")
    text = (tmp_path / "check" / "report.md").read_text()
    assert code == 1, output
    assert "Result: **FAIL (method no_such_method)**" in text
    assert re.search(r"^\| kd \| resnet8 \| PASS \|", text, re.M)
    assert re.search(r"^\| no_such_method \| resnet8 \| FAIL \|.*no_such_method", text, re.M)
    assert "## (b)" not in text  # only the sections asked for
