"""models/connectors.py: the AB connector."""
import pytest
import torch

from models.connectors import Connector


def test_connector_convreg_when_shapes_differ():
    conn = Connector([(2, 4, 4, 4), (2, 8, 2, 2)], [(2, 6, 4, 4), (2, 8, 2, 2)])
    out = conn([torch.randn(2, 4, 4, 4), torch.randn(2, 8, 2, 2)])
    assert out[0].shape == (2, 6, 4, 4) and out[1].shape == (2, 8, 2, 2)
    assert {"connectors.0.conv.weight", "connectors.0.bn.running_mean"} <= set(conn.state_dict())
    with pytest.raises(ValueError):
        Connector([(2, 4, 4, 4)], [])
