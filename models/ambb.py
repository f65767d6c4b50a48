"""Re-parameterisable conv+BN blocks used by the KDrefine students.

``AMBB`` trains with five parallel branches (three k x k conv+BN copies, one
k x 1 and one 1 x k conv+BN) and collapses them into one biased k x k conv for
inference.  ``ConvBN`` is the single-branch counterpart that only folds its BN.

The block type and the deploy flag are ordinary constructor arguments: the
reference code kept them in module globals, which made the outcome of building
a model depend on whatever was set before.
"""
import torch
import torch.nn as nn

__all__ = [
    'VALID_BLOCK_TYPES', 'normalize_block_type', 'fuse_conv_bn', 'ConvBN', 'AMBB', 'bn_or_block',
    'conv_bn', 'conv_bn_relu', 'convert_to_deploy',
]

# 'ACTDB' is what the older README and checkpoints call the same block.
_BLOCK_ALIASES = {'base': 'base', 'ambb': 'AMBB', 'actdb': 'AMBB'}
VALID_BLOCK_TYPES = ('base', 'AMBB', 'ACTDB')


def normalize_block_type(block_type):
    key = str(block_type).lower()
    if key not in _BLOCK_ALIASES:
        raise ValueError('unknown block_type {!r}; valid block types are {}'.format(
            block_type, ', '.join(repr(b) for b in VALID_BLOCK_TYPES)))
    return _BLOCK_ALIASES[key]


@torch.no_grad()
def fuse_conv_bn(weight, bn, conv_bias=None):
    """Kernel and bias of conv -> BN as a single conv, using BN running stats.

    Running statistics are what eval() uses, so the fused conv matches the
    branch only in eval mode; that is the mode a deployed model runs in.
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused_w = weight * scale.reshape(-1, 1, 1, 1)
    mean = bn.running_mean if conv_bias is None else bn.running_mean - conv_bias
    fused_b = bn.bias - mean * scale
    return fused_w, fused_b


def _biased_conv_like(conv):
    return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                     stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                     groups=conv.groups, bias=True)


def _load_fused(conv, weight, bias):
    # Move first so that a float64 model is not rounded through float32.
    conv = conv.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


class ConvBN(nn.Module):
    """Conv (no bias) + BN; after ``switch_to_deploy`` a single biased conv.

    Both forms keep the conv under the name ``conv`` so a fused state dict has
    the same keys as a model constructed with ``deploy=True``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, deploy=False, nonlinear=None):
        super().__init__()
        self.nonlinear = nn.Identity() if nonlinear is None else nonlinear
        self.deploy = deploy
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=groups,
                              bias=deploy)
        if not deploy:
            self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        x = self.conv(x)
        if not self.deploy:
            x = self.bn(x)
        return self.nonlinear(x)

    def get_equivalent_kernel_bias(self):
        if self.deploy:
            return self.conv.weight.detach(), self.conv.bias.detach()
        return fuse_conv_bn(self.conv.weight, self.bn)

    def switch_to_deploy(self):
        if self.deploy:
            return
        weight, bias = self.get_equivalent_kernel_bias()
        fused = _load_fused(_biased_conv_like(self.conv), weight, bias)
        del self.conv
        del self.bn
        self.conv = fused
        self.deploy = True


def _conv_bn_branch(in_channels, out_channels, kernel_size, stride, padding, dilation, groups):
    branch = nn.Sequential()
    branch.add_module('conv', nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                        padding=padding, dilation=dilation, groups=groups,
                                        bias=False))
    branch.add_module('bn', nn.BatchNorm2d(out_channels))
    return branch


class AMBB(nn.Module):
    """Five-branch k x k block (3 square duplicates + vertical + horizontal).

    Deploy form: one biased conv named ``tdb_reparam`` (reference key name).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, deploy=False, nonlinear=None):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size % 2 == 0:
            raise ValueError('AMBB needs an odd integer kernel_size, got {!r}'.format(kernel_size))
        half = dilation * (kernel_size // 2)
        # The asymmetric branches can only be embedded into the centre row /
        # column of the square kernel when the square conv is 'same'-padded;
        # otherwise their sliding windows would not line up.
        if padding != half:
            raise ValueError('AMBB requires padding == dilation * (kernel_size // 2) '
                             '(= {}), got {}'.format(half, padding))
        self.nonlinear = nn.Identity() if nonlinear is None else nonlinear
        self.deploy = deploy
        self.kernel_size = kernel_size
        self.out_channels = out_channels
        self.groups = groups

        if deploy:
            self.tdb_reparam = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                         padding=padding, dilation=dilation, groups=groups,
                                         bias=True)
            return

        args = (in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self.duplicate1 = _conv_bn_branch(*args)
        self.duplicate2 = _conv_bn_branch(*args)
        self.duplicate3 = _conv_bn_branch(*args)
        # Zero padding along the collapsed axis makes the single row/column
        # sample exactly the centre row/column of the square window (any stride).
        self.ver_conv = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), stride=stride,
                                  padding=[padding, padding - half], dilation=dilation,
                                  groups=groups, bias=False)
        self.ver_bn = nn.BatchNorm2d(out_channels)
        self.hor_conv = nn.Conv2d(in_channels, out_channels, (1, kernel_size), stride=stride,
                                  padding=[padding - half, padding], dilation=dilation,
                                  groups=groups, bias=False)
        self.hor_bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        if self.deploy:
            return self.nonlinear(self.tdb_reparam(x))
        out = self.duplicate1(x) + self.duplicate2(x) + self.duplicate3(x)
        out = out + self.ver_bn(self.ver_conv(x)) + self.hor_bn(self.hor_conv(x))
        return self.nonlinear(out)

    @staticmethod
    def _embed_centre(square, asym):
        kh, kw = square.shape[2:]
        ah, aw = asym.shape[2:]
        top, left = kh // 2 - ah // 2, kw // 2 - aw // 2
        square[:, :, top:top + ah, left:left + aw] += asym

    @torch.no_grad()
    def get_equivalent_kernel_bias(self):
        if self.deploy:
            return self.tdb_reparam.weight.detach(), self.tdb_reparam.bias.detach()
        kernel = None
        bias = None
        for branch in (self.duplicate1, self.duplicate2, self.duplicate3):
            k, b = fuse_conv_bn(branch.conv.weight, branch.bn)
            kernel = k.clone() if kernel is None else kernel + k
            bias = b.clone() if bias is None else bias + b
        for conv, bn in ((self.ver_conv, self.ver_bn), (self.hor_conv, self.hor_bn)):
            k, b = fuse_conv_bn(conv.weight, bn)
            self._embed_centre(kernel, k)
            bias = bias + b
        return kernel, bias

    def switch_to_deploy(self):
        if self.deploy:
            return
        weight, bias = self.get_equivalent_kernel_bias()
        fused = _load_fused(_biased_conv_like(self.duplicate1.conv), weight, bias)
        for name in ('duplicate1', 'duplicate2', 'duplicate3',
                     'ver_conv', 'ver_bn', 'hor_conv', 'hor_bn'):
            delattr(self, name)
        self.tdb_reparam = fused
        self.deploy = True


def bn_or_block(block):
    """The BatchNorm a conv+BN block ends in (a training-form ConvBN's ``bn``), else the block itself: an AMBB
    adds several branches' BNs and a fused block has none (what ``get_bn_before_relu`` of the rep* models returns)."""
    if isinstance(block, ConvBN) and not block.deploy:
        return block.bn
    return block


def conv_bn(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
            *, block_type='AMBB', deploy=False, nonlinear=None):
    """Conv+BN factory: AMBB for 3x3/5x5 convs, plain ConvBN otherwise.

    1x1 convs have no row/column to add, and >=7 kernels were left plain in the
    reference, so both stay ConvBN whatever ``block_type`` says.
    """
    kind = normalize_block_type(block_type)
    if kind == 'base' or kernel_size == 1 or kernel_size >= 7:
        cls = ConvBN
    else:
        cls = AMBB
    return cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
               dilation=dilation, groups=groups, deploy=deploy, nonlinear=nonlinear)


def conv_bn_relu(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, *, block_type='AMBB', deploy=False):
    return conv_bn(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                   block_type=block_type, deploy=deploy, nonlinear=nn.ReLU())


def convert_to_deploy(model):
    """Fuse every re-parameterisable block of ``model`` in place; returns it."""
    # Snapshot first: fusing replaces submodules while we would be iterating.
    for module in list(model.modules()):
        if hasattr(module, 'switch_to_deploy'):
            module.switch_to_deploy()
    return model
