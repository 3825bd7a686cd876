"""Kernel SPEC handling that needs no network: mirror discovery, ordering, ABI names."""

import pytest

from gadgetd.host import kernels


def test_mirrors_from_deb822_and_one_line_sources(tmp_path, monkeypatch):
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [signed-by=/k.gpg] http://mirror.example/debian bookworm main\n")
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: https://other.example/apt\nSuites: cloud-sdk\nComponents: main\n")
    monkeypatch.setattr(kernels, "_SYSTEM_SOURCES", (tmp_path / "sources.list", d))
    assert kernels.system_mirrors() == {
        "debian": ("http://mirror.example/debian", "/k.gpg"),
        "debian-security": ("http://sec.example/debian-security",
                            "/usr/share/keyrings/debian-archive-keyring.gpg"),
    }


def test_no_debian_mirror_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "_SYSTEM_SOURCES", (tmp_path / "none", tmp_path))
    with pytest.raises(kernels.KernelError):
        kernels.system_mirrors()


def test_version_ordering():
    rows = [("bookworm", "r", v) for v in ("6.1.192-2", "6.1.176-1", "6.1.192-1", "6.1.190-1",
                                           "6.1.80-1")]
    assert [r[2] for r in kernels.sort_rows(rows)] == [
        "6.1.80-1", "6.1.176-1", "6.1.190-1", "6.1.192-1", "6.1.192-2"]


def test_version_ordering_is_debian_s():
    """A backport (~deb12u1) sorts before the version it backports; epochs count first."""
    rows = [("trixie", "r", v) for v in ("6.12.115-2", "1:0.1-1", "6.12.115-2~deb12u1",
                                         "6.12.99-1", "6.12.115-1")]
    assert [r[2] for r in kernels.sort_rows(rows)] == [
        "6.12.99-1", "6.12.115-1", "6.12.115-2~deb12u1", "6.12.115-2", "1:0.1-1"]
    bookworm_first = kernels.sort_rows([("sid", "a", "1.0-1"), ("bookworm", "b", "9.0-1")])
    assert [r[0] for r in bookworm_first] == ["bookworm", "sid"]


@pytest.mark.parametrize("older,newer", [
    ("6.12.115-2~deb12u1", "6.12.115-2"),  # ~ sorts before anything, the end included
    ("9.9-1", "1:0.1-1"),  # an epoch outranks the upstream version
    ("6.1.192-1", "6.1.192-2"),  # Debian revision
    ("6.1.99-1", "6.1.192-1"),  # numerically, not as text
])
def test_debian_version_pairs(older, newer):
    assert kernels.Version(older) < kernels.Version(newer)
    for given in ([older, newer], [newer, older]):
        rows = [("bookworm", "r", v) for v in given]
        assert [r[2] for r in kernels.sort_rows(rows)] == [older, newer]


@pytest.mark.parametrize("name,ok", [
    ("linux-image-6.1.0-54-amd64", True),
    ("linux-image-6.12.118+deb13-amd64", True),
    ("linux-image-6.12.90+deb13.1-amd64", True),
    ("linux-image-7.2.13+deb14-amd64", True),
    ("linux-image-6.1.0-54-amd64-unsigned", False),
    ("linux-image-amd64", False),
    ("linux-image-6.1.0-54-cloud-amd64", False),
])
def test_image_package_names(name, ok):
    assert bool(kernels.IMAGE_RE.match(name)) == ok


def test_unknown_spec_is_a_bisect_skip():
    with pytest.raises(kernels.KernelError) as exc:
        kernels.resolve("/nonexistent/bzImage")
    assert exc.value.status == 125


def test_checkout_under_tmp_is_shared_with_the_guest(monkeypatch, tmp_path):
    """The guest mounts its own /tmp: a clone or venv there is shared with the guest, once."""
    from gadgetd.host import vm

    monkeypatch.setattr(vm, "CHECKOUT", vm.GUEST_TMPFS / "clone")
    monkeypatch.setattr(vm.sys, "prefix", str(vm.GUEST_TMPFS / "clone/.venv"))
    monkeypatch.chdir("/")
    assert vm._hidden_dirs() == [vm.GUEST_TMPFS / "clone"]
    monkeypatch.setattr(vm, "CHECKOUT", vm.Path("/work/gadgetd"))
    monkeypatch.setattr(vm.sys, "prefix", "/work/gadgetd/.venv")
    assert vm._hidden_dirs() == []
