"""Data sets as uint8 tensors on the training device, with on-device augmentation.

``build_dataset(opt, device)`` returns a :class:`DataBundle` whose ``train``/``test`` splits yield
:class:`helper.types.Batch` objects. Large image-folder sets would use a DataLoader behind the
same iterator; the CIFAR-sized sets here never need worker processes.
"""
from .core import DataBundle, TensorImageSet, build_dataset  # noqa: F401
from .normalization import NORMALIZATIONS, set_normalization  # noqa: F401
from .registry import DATASETS, available_datasets, register_dataset  # noqa: F401
# the data sets register themselves on import
from . import cifar, digits, fashion_mnist  # noqa: F401,E402
