import importlib


def test_packages_import():
    for name in ("s2s", "metrics", "samplers", "recipes"):
        assert importlib.import_module(name) is not None
