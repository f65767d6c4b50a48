"""Contrastive Representation Distillation (CRD): loss, memory bank and contrast-index sampler."""
from .criterion import CRDLoss, ContrastLoss, Embed  # noqa: F401
from .memory import ContrastMemory  # noqa: F401
from .sampler import ContrastSampler  # noqa: F401
