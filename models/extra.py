"""Views of the registry for the KDrefine re-parameterisable students and the EMKD variable-depth students.

The constructors register themselves in their own files; these dicts are derived from the declared arch
options and kept for code that imports them.
"""
from . import myresnet, mywrn, repmobilenetv2, represnet, repvgg  # noqa: F401  (registers them)
from .registry import names_with_option

__all__ = ['EXTRA_MODELS', 'REP_MODELS', 'MY_MODELS']

# Signature: (num_classes=100, block_type='AMBB', deploy=False)
REP_MODELS = names_with_option('deploy')

# Signature: (block_depth=None, num_classes=100)
MY_MODELS = names_with_option('block_depth')

EXTRA_MODELS = {**REP_MODELS, **MY_MODELS}
