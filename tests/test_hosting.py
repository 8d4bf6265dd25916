"""Hosting: the bind address (flags > GRADIO_SERVER_* > 127.0.0.1:7860, one warning line off
loopback) and the Space folder assembled from a release."""

from __future__ import annotations

import pytest

from flaxdigits.serve.page import hosting

ALL = "0.0.0.0"  # noqa: S104 (the address under test)


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        ((None, None), {}, ("127.0.0.1", 7860)),
        (
            (None, None),
            {"GRADIO_SERVER_NAME": ALL, "GRADIO_SERVER_PORT": "8080"},
            (ALL, 8080),
        ),
        (
            ("127.0.0.2", 9000),
            {"GRADIO_SERVER_NAME": ALL, "GRADIO_SERVER_PORT": "8080"},
            ("127.0.0.2", 9000),
        ),
        (("::1", None), {"GRADIO_SERVER_PORT": "8081"}, ("::1", 8081)),
    ],
)
def test_flags_win_over_the_environment_which_wins_over_loopback(flags, env, expected):
    host, port, _ = hosting.bind(*flags, environ=env)
    assert (host, port) == expected


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "localhost", "::1", "[::1]"])
def test_loopback_binds_quietly(host):
    assert hosting.bind(host, None, environ={})[2] is None


@pytest.mark.parametrize("host", [ALL, "::", "192.168.1.5", "example.org"])
def test_any_other_address_gets_one_warning_line(host):
    warning = hosting.bind(host, 7860, environ={})[2]
    assert warning and "\n" not in warning and "reachable from the network" in warning
    assert host in warning


@pytest.mark.parametrize("raw", ["http", "0", "70000"])
def test_a_bad_port_is_one_error(raw):
    with pytest.raises(hosting.HostingError, match="port"):
        hosting.bind(None, None, environ={"GRADIO_SERVER_PORT": raw})


def test_serve_cli_binds_from_flags_or_environment_warns_off_loopback_and_verifies_releases(
    tmp_path, monkeypatch, capsys
):
    import flaxdigits.serve.page.app as app
    from flaxdigits.cli.main import main
    from flaxdigits.export.release import build_release
    from tests.support.release_models import write_models

    archive = build_release(write_models(tmp_path / "m"), tmp_path, latency=False, log=print)
    calls = []

    class Page:
        def block_thread(self):
            calls.append("served")

    def fake_launch(models_dir, host, port, share, threads, block):
        assert block is False  # the release's private copy is removed before serving
        calls.append((host, port, sorted(p.name for p in models_dir.iterdir())))
        return Page()

    monkeypatch.setattr(app, "launch", fake_launch)
    monkeypatch.setenv("GRADIO_SERVER_NAME", ALL)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    assert main(["serve", "--models", str(archive)]) == 0
    allocator = "memory allocator: the system's malloc (asked for)\n"  # conftest: system
    err = capsys.readouterr().err
    assert err.startswith(allocator) and err.count("\n") == 2 and f"serving on {ALL}:8123" in err
    assert main(["serve", "--models", str(archive), "--host", "127.0.0.1", "--port", "9"]) == 0
    assert capsys.readouterr().err == allocator
    models = ["cnn.int8.onnx", "cnn.json", "cnn.onnx", "mlp.int8.onnx", "mlp.json", "mlp.onnx"]
    assert calls == [(ALL, 8123, models), "served", ("127.0.0.1", 9, models), "served"]
    data = bytearray(archive.read_bytes())
    data[-9] ^= 1
    archive.write_bytes(bytes(data))
    assert main(["serve", "--models", str(archive)]) == 1 and len(calls) == 4
    assert "release refused, nothing loaded" in capsys.readouterr().err
