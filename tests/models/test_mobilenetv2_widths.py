"""CheckpointKD's MobileNetV2 widths (models/mobilenetv2_widths.py)."""
import pytest
import torch

from models import build_model
from models.mobilenetv2_widths import MOBILENETV2_WIDTH_MODELS


@pytest.mark.parametrize("name,stem,stages", [
    ("mobilenetv2_075", 24, [12, 18, 24, 48, 72, 120, 240]),
    ("mobilenetv2_05", 16, [8, 12, 16, 32, 48, 80, 160]),
    ("mobilenetv2_035", 11, [5, 8, 11, 22, 33, 56, 112]),
    ("mobilenetv2", 32, [16, 24, 32, 64, 96, 160, 320])])
def test_mobilenetv2_widths(name, stem, stages):
    model = MOBILENETV2_WIDTH_MODELS[name](num_classes=100)
    assert model.conv1[0].out_channels == stem
    assert [s[-1].conv[-1].num_features for s in model.blocks] == stages
    assert model.last_channel == 1280 and model.classifier[0].out_features == 100
    feats, logits = model(torch.randn(1, 3, 32, 32), is_feat=True)
    assert tuple(feats[-1].shape) == (1, 1280) and tuple(feats[-2].shape[2:]) == (2, 2)


def test_mobilenetv2_05_is_repdistillers_mobilenetv2():
    a, b = MOBILENETV2_WIDTH_MODELS["mobilenetv2_05"](), build_model("MobileNetV2", num_classes=100)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
