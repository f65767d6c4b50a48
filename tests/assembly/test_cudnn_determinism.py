"""cuDNN determinism of side-by-side runs (issue #10, the CUDA path): one process-wide setting for all methods."""
from types import SimpleNamespace

import pytest

from assembly.options import Configuration
from assembly.student import cudnn_determinism


@pytest.mark.parametrize("methods,expected", [
    (["ickd"], (True, "")),
    (["ickd", "ickd"], (True, "")),
    (["kd"], (False, "")),
    (["kd", "ickd"], (False, "note: cuDNN stays non-deterministic, as the other methods of this run need; run "
                             "ickd alone for its reference's deterministic cuDNN")),
    (["ickd", "kd"], (False, "note: cuDNN stays non-deterministic, as the other methods of this run need; run "
                             "ickd alone for its reference's deterministic cuDNN")),
])
def test_deterministic_cudnn_only_when_every_configuration_wants_it(methods, expected):
    # before: the first configuration's method decided for the whole process
    configs = [Configuration(SimpleNamespace(distill=m), {}) for m in methods]
    assert cudnn_determinism(configs) == expected
