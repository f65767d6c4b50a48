"""The distiller registry: the two-stage methods and CRD are registered with their default weights."""
import distiller_zoo


def test_registered_and_exported():
    for name in ("abound", "factor", "fsp", "crd"):
        assert name in distiller_zoo.available()
    assert distiller_zoo.REGISTRY["abound"].defaults == {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}
    assert distiller_zoo.REGISTRY["factor"].defaults == {"gamma": 1.0, "alpha": 0.0, "beta": 200.0}
    assert distiller_zoo.REGISTRY["fsp"].defaults == {"gamma": 1.0, "alpha": 0.0, "beta": 50.0}
    assert distiller_zoo.REGISTRY["crd"].defaults == {"gamma": 1.0, "alpha": 0.0, "beta": 0.8}
