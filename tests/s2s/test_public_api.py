"""Every name `s2s` promises resolves, and the README example runs."""

import s2s


def test_lazy_exports_resolve():
    missing = []
    for name in s2s._EXPORTS:
        try:
            getattr(s2s, name)
        except (ImportError, AttributeError) as error:
            missing.append(f"{name}: {error}")
    assert not missing, "\n".join(missing)


def test_unknown_attribute_is_an_attribute_error():
    try:
        s2s.NoSuchThing  # noqa: B018
    except AttributeError as error:
        assert "NoSuchThing" in str(error)
    else:
        raise AssertionError("expected AttributeError")
