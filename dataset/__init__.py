"""Data sets as uint8 tensors on the training device, with on-device augmentation.

``build_dataset(name, data_root, device, settings)`` returns a :class:`DataBundle` whose ``train``/``test`` splits
yield :class:`helper.types.Batch` objects. The CIFAR-sized sets live on the device and never need worker processes;
the ImageNet-style folder sets (``dataset/folder.py``) read through a DataLoader behind the same iterator.
"""
from .core import DataBundle, TensorImageSet, build_dataset  # noqa: F401
from .normalization import NORMALIZATIONS, set_normalization  # noqa: F401
from .registry import DATASETS, available_datasets, dataset_recipe, input_family, recipe_name, register_dataset  # noqa: F401,E501
# the data sets register themselves on import
from . import cifar, digits, fashion_mnist, folder  # noqa: F401,E402
from .folder import FolderSettings  # noqa: F401,E402
