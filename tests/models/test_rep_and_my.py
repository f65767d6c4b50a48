"""KDrefine re-parameterisable students (AMBB fusion) and EMKD variable-depth students."""
import importlib

import pytest
import torch
import torch.nn as nn

from models.ambb import AMBB, ConvBN, conv_bn, convert_to_deploy
from models.extra import EXTRA_MODELS
from models.myresnet import myresnet20, myresnet110
from models.mywrn import mywrn_16_1, mywrn_16_2, mywrn_40_2
from models.repmobilenetv2 import repmobilenetv2
from models.represnet import represnet8x4, represnet20, represnet32
from models.repvgg import repvgg8

def n_params(model):
    return sum(p.numel() for p in model.parameters())


def randomise_bn(model, seed=0):
    # Non-trivial running statistics, so that fusion errors in the BN folding
    # cannot hide behind the identity-like default stats.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, hi in ((m.running_mean, 0.1), (m.running_var, 0.2), (m.weight, 0.3),
                          (m.bias, 0.4)):
                with torch.no_grad():
                    t.copy_(torch.rand(t.shape, generator=g) * hi)
    return model


# ---------------------------------------------------------------- single blocks

@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('depthwise', [False, True])
@pytest.mark.parametrize('kernel,dilation', [(3, 1), (5, 1), (3, 2)])
def test_ambb_fusion_matches_training_form(stride, depthwise, kernel, dilation):
    torch.manual_seed(0)
    cin, cout = 8, 8
    groups = cin if depthwise else 1
    pad = dilation * (kernel // 2)
    block = randomise_bn(AMBB(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation,
                              groups=groups)).eval()
    x = torch.randn(2, cin, 15, 17)
    with torch.no_grad():
        y = block(x)
        block.switch_to_deploy()
        y_dep = block(x)
    assert y.shape == y_dep.shape
    assert (y - y_dep).abs().max().item() < 1e-5
    assert set(block.state_dict()) == {'tdb_reparam.weight', 'tdb_reparam.bias'}
    assert block.tdb_reparam.weight.shape == (cout, cin // groups, kernel, kernel)
    block.switch_to_deploy()  # second call must be harmless
    with torch.no_grad():
        assert torch.equal(block(x), y_dep)


def test_ambb_branch_layout_and_nonlinear():
    block = AMBB(4, 6, 3, stride=2, padding=1, nonlinear=nn.ReLU())
    assert block.ver_conv.kernel_size == (3, 1) and block.ver_conv.padding == (1, 0)
    assert block.hor_conv.kernel_size == (1, 3) and block.hor_conv.padding == (0, 1)
    for name in ('duplicate1', 'duplicate2', 'duplicate3'):
        branch = getattr(block, name)
        assert isinstance(branch.conv, nn.Conv2d) and isinstance(branch.bn, nn.BatchNorm2d)
        assert branch.conv.bias is None
    randomise_bn(block).eval()
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        y = block(x)
        convert_to_deploy(block)
        assert (y - block(x)).abs().max().item() < 1e-5
    assert (y >= 0).all()


def test_ambb_rejects_misaligned_padding():
    with pytest.raises(ValueError):
        AMBB(4, 4, 3, padding=0)


def test_convbn_fusion_and_keys():
    torch.manual_seed(1)
    m = randomise_bn(ConvBN(5, 7, 1, stride=2)).eval()
    x = torch.randn(2, 5, 8, 8)
    with torch.no_grad():
        y = m(x)
        m.switch_to_deploy()
        assert (y - m(x)).abs().max().item() < 1e-5
    assert set(m.state_dict()) == set(ConvBN(5, 7, 1, stride=2, deploy=True).state_dict())


def test_conv_bn_factory_dispatch_and_alias():
    assert isinstance(conv_bn(4, 4, 3, 1, 1), AMBB)
    assert isinstance(conv_bn(4, 4, 3, 1, 1, block_type='ACTDB'), AMBB)
    assert isinstance(conv_bn(4, 4, 3, 1, 1, block_type='base'), ConvBN)
    assert isinstance(conv_bn(4, 4, 1), ConvBN)
    assert isinstance(conv_bn(4, 4, 7, 1, 3), ConvBN)
    assert conv_bn(4, 4, 3, 1, 1, deploy=True).deploy
    with pytest.raises(ValueError) as err:
        conv_bn(4, 4, 3, 1, 1, block_type='DBB')
    assert 'AMBB' in str(err.value) and 'base' in str(err.value)
    # A bad name is an error even where the kernel size would ignore it.
    with pytest.raises(ValueError):
        conv_bn(4, 4, 1, block_type='nope')
    with pytest.raises(ValueError):
        represnet20(block_type='nope')


# -------------------------------------------------------------- whole networks

@pytest.mark.parametrize('ctor', [represnet20, repvgg8, repmobilenetv2])
def test_network_fusion_and_deploy_build(ctor):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)

    model = randomise_bn(ctor()).eval()
    with torch.no_grad():
        y = model(x)
        convert_to_deploy(model)
        y_dep = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) and 'duplicate' in n
                   for n, m in model.named_modules())
    # Randomised BN stats can blow activations up (represnet20 logits reach
    # ~1e7), so in float32 the error is judged relative to the output scale.
    scale = max(1.0, y.abs().max().item())
    assert (y - y_dep).abs().max().item() / scale < 1e-5

    deployed = ctor(deploy=True).eval()
    deployed.load_state_dict(model.state_dict(), strict=True)
    assert n_params(deployed) == n_params(model)
    with torch.no_grad():
        assert torch.equal(deployed(x), y_dep)
        feats, logits = deployed(x, is_feat=True)
    assert torch.equal(logits, y_dep)


@pytest.mark.parametrize('ctor', [represnet20, repvgg8, repmobilenetv2])
def test_network_fusion_float64_absolute(ctor):
    torch.manual_seed(0)
    model = randomise_bn(ctor()).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        y_dep = convert_to_deploy(model)(x)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert (y - y_dep).abs().max().item() < 1e-5


def test_parameter_counts():
    assert n_params(represnet20()) == 997_684
    assert n_params(represnet20(deploy=True)) == 277_636
    assert n_params(convert_to_deploy(represnet20())) == 277_636
    # 'base' puts a plain conv+BN everywhere: exactly the vanilla resnet20 size.
    assert n_params(represnet20(block_type='base')) == 278_324
    assert n_params(myresnet20()) == 278_324


def test_represnet_features_and_train_step():
    model = represnet20()
    x = torch.randn(2, 3, 32, 32)
    feats, logits = model(x, is_feat=True)
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 32), (2, 16, 32, 32), (2, 32, 16, 16),
                                               (2, 64, 8, 8), (2, 64)]
    assert logits.shape == (2, 100)
    assert all((f >= 0).all() for f in feats[:4])
    pre, _ = model(x, is_feat=True, preact=True)
    assert (pre[3] < 0).any()
    logits.sum().backward()
    assert model.conv1.hor_conv.weight.grad is not None

    feats, _ = represnet8x4()(x, is_feat=True)
    assert feats[-2].shape == (2, 256, 8, 8) and feats[-1].shape == (2, 256)
    assert len(represnet32().layer2) == 5


def test_repvgg_and_repmobilenetv2_features():
    x = torch.randn(2, 3, 32, 32)
    feats, logits = repvgg8()(x, is_feat=True)
    assert [f.shape[1:] for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8),
                                           (512, 4, 4), (512, 4, 4), (512,)]
    feats, logits = repmobilenetv2()(x, is_feat=True)
    assert [f.shape[1:] for f in feats] == [(16, 16, 16), (12, 16, 16), (16, 8, 8),
                                           (48, 4, 4), (160, 2, 2), (1280,)]
    assert logits.shape == (2, 100)


def test_extra_models_registry():
    expected = {'represnet20', 'represnet32', 'represnet8x4', 'repvgg8', 'repmobilenetv2',
                'myresnet8', 'myresnet14', 'myresnet20', 'myresnet32', 'myresnet44',
                'myresnet56', 'myresnet110', 'myresnet8x4', 'myresnet32x4',
                'mywrn_16_1', 'mywrn_16_2', 'mywrn_40_1', 'mywrn_40_2'}
    assert expected <= set(EXTRA_MODELS)
    for name, ctor in EXTRA_MODELS.items():
        assert callable(ctor), name
    assert EXTRA_MODELS['myresnet32x4'](num_classes=10).fc.out_features == 10


# ---------------------------------------------------------- EMKD myresnet/mywrn

_BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


def _bn_entries(prefix, c):
    shapes = {'weight': (c,), 'bias': (c,), 'running_mean': (c,), 'running_var': (c,),
              'num_batches_tracked': ()}
    return {'{}.{}'.format(prefix, k): shapes[k] for k in _BN_KEYS}


def reference_cifar_resnet_state(block_depth, widths=(16, 16, 32, 64), num_classes=100):
    """Key -> shape of RepDistiller's CIFAR ResNet, written out from its layout."""
    state = {'conv1.weight': (widths[0], 3, 3, 3)}
    state.update(_bn_entries('bn1', widths[0]))
    inplanes = widths[0]
    for s, (planes, blocks) in enumerate(zip(widths[1:], block_depth)):
        stride = 1 if s == 0 else 2
        for b in range(blocks):
            p = 'layer{}.{}'.format(s + 1, b)
            cin = inplanes if b == 0 else planes
            state[p + '.conv1.weight'] = (planes, cin, 3, 3)
            state.update(_bn_entries(p + '.bn1', planes))
            state[p + '.conv2.weight'] = (planes, planes, 3, 3)
            state.update(_bn_entries(p + '.bn2', planes))
            if b == 0 and (stride != 1 or inplanes != planes):
                state[p + '.downsample.0.weight'] = (planes, inplanes, 1, 1)
                state.update(_bn_entries(p + '.downsample.1', planes))
        inplanes = planes
    state['fc.weight'] = (num_classes, widths[-1])
    state['fc.bias'] = (num_classes,)
    return state


def basic_block_params(cin, cout, stride):
    p = 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout
    if stride != 1 or cin != cout:
        p += cin * cout + 2 * cout
    return p


def cifar_resnet_params(block_depth, widths=(16, 16, 32, 64), num_classes=100):
    total = 27 * widths[0] + 2 * widths[0] + widths[-1] * num_classes + num_classes
    cin = widths[0]
    for s, (c, n) in enumerate(zip(widths[1:], block_depth)):
        total += basic_block_params(cin, c, 1 if s == 0 else 2)
        total += (n - 1) * basic_block_params(c, c, 1)
        cin = c
    return total


def test_myresnet20_matches_repdistiller_resnet20_layout():
    model = myresnet20(block_depth=[3, 3, 3])
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == reference_cifar_resnet_state([3, 3, 3])
    assert n_params(model) == 278_324 == cifar_resnet_params([3, 3, 3])
    assert model.nominal_depth == [3, 3, 3] and model.block_depth == [3, 3, 3]
    assert myresnet20().block_depth == [3, 3, 3]


def test_myresnet20_matches_sibling_resnet20_if_present():
    try:
        resnet20 = importlib.import_module('models.resnet').resnet20
    except Exception as exc:  # the vanilla zoo is maintained separately
        pytest.skip('models.resnet.resnet20 unavailable: {}'.format(exc))
    ref = {k: tuple(v.shape) for k, v in resnet20(num_classes=100).state_dict().items()}
    ref_model = randomise_bn(resnet20(num_classes=100)).eval()
    mine = myresnet20([3, 3, 3])
    assert {k: tuple(v.shape) for k, v in mine.state_dict().items()} == ref
    mine.load_state_dict(ref_model.state_dict())
    mine.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ref_model(x), mine(x), atol=1e-4)


def test_myresnet20_searched_composition():
    model = myresnet20(block_depth=[3, 7, 2])
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [3, 7, 2]
    assert model.nominal_depth == [3, 3, 3] and model.block_depth == [3, 7, 2]
    assert n_params(model) == cifar_resnet_params([3, 7, 2]) == 278_580
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == reference_cifar_resnet_state([3, 7, 2])
    # Only the last block of each stage returns (out, preact).
    assert [b.is_last for b in model.layer2] == [False] * 6 + [True]
    x = torch.randn(2, 3, 32, 32)
    feats, logits = model(x, is_feat=True)
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 32), (2, 16, 32, 32), (2, 32, 16, 16),
                                               (2, 64, 8, 8), (2, 64)]
    feats, _ = myresnet20('2,1,1')(x, is_feat=True, preact=True)
    assert feats[3].shape == (2, 64, 8, 8)
    with pytest.raises(ValueError):
        myresnet20([3, 0, 3])
    with pytest.raises(ValueError):
        myresnet20([3, 3])


def test_myresnet_nominal_depths():
    assert myresnet110().nominal_depth == [18, 18, 18]
    assert n_params(myresnet110()) == cifar_resnet_params([18] * 3)
    wide = EXTRA_MODELS['myresnet8x4']()
    assert wide.nominal_depth == [1, 1, 1]
    assert n_params(wide) == cifar_resnet_params([1, 1, 1], widths=(32, 64, 128, 256))
    assert EXTRA_MODELS['myresnet32x4']().nominal_depth == [5, 5, 5]


def wrn_params(block_depth, k, num_classes=100):
    ch = [16, 16 * k, 32 * k, 64 * k]
    total = 27 * ch[0] + 2 * ch[3] + ch[3] * num_classes + num_classes
    for s, n in enumerate(block_depth):
        for b in range(n):
            cin = ch[s] if b == 0 else ch[s + 1]
            cout = ch[s + 1]
            total += 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout
            if cin != cout:
                total += cin * cout
    return total


def test_mywrn_layout_and_features():
    x = torch.randn(2, 3, 32, 32)
    model = mywrn_16_2()
    assert model.nominal_depth == [2, 2, 2] and model.block_depth == [2, 2, 2]
    assert n_params(model) == wrn_params([2, 2, 2], 2)
    keys = set(model.state_dict())
    assert {'conv1.weight', 'block1.layer.0.bn1.weight', 'block1.layer.0.convShortcut.weight',
            'block2.layer.1.conv2.weight', 'bn1.running_var', 'fc.weight'} <= keys
    feats, logits = model(x, is_feat=True)
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 32), (2, 32, 32, 32), (2, 64, 16, 16),
                                               (2, 128, 8, 8), (2, 128)]
    assert logits.shape == (2, 100)
    # Raw (pre-BN) block output may be negative; the pooled vector is post-ReLU.
    assert (feats[-1] >= 0).all()

    thin = mywrn_16_1(block_depth=[1, 3, 2])
    assert [len(b.layer) for b in (thin.block1, thin.block2, thin.block3)] == [1, 3, 2]
    assert thin.block1.layer[0].convShortcut is None
    assert n_params(thin) == wrn_params([1, 3, 2], 1)
    feats, _ = thin(x, is_feat=True, preact=True)
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 32), (2, 16, 32, 32), (2, 32, 16, 16),
                                               (2, 64, 8, 8), (2, 64)]

    assert mywrn_40_2().nominal_depth == [6, 6, 6]
    assert n_params(mywrn_40_2()) == wrn_params([6, 6, 6], 2) == 2_255_156


def test_mywrn_matches_sibling_wrn_if_present():
    try:
        wrn_16_2 = importlib.import_module('models.wrn').wrn_16_2
    except Exception as exc:
        pytest.skip('models.wrn.wrn_16_2 unavailable: {}'.format(exc))
    ref = wrn_16_2(num_classes=100)
    mine = mywrn_16_2()
    assert {k: v.shape for k, v in ref.state_dict().items()} == \
        {k: v.shape for k, v in mine.state_dict().items()}
    mine.load_state_dict(randomise_bn(ref).state_dict())
    x = torch.randn(2, 3, 32, 32)
    ref.eval()
    mine.eval()
    with torch.no_grad():
        assert torch.allclose(ref(x), mine(x), atol=1e-4)
