"""Data sets as uint8 tensors on the training device, with on-device augmentation.

``build_dataset(opt, device)`` returns a :class:`DataBundle` whose ``train``/``test`` splits yield
:class:`distiller_zoo.base.Batch` objects. Large image-folder sets would use a DataLoader behind the
same iterator; the CIFAR-sized sets here never need worker processes.
"""
from .core import DATASETS, DataBundle, TensorImageSet, build_dataset  # noqa: F401
