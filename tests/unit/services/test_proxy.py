"""The API proxy's configuration and refusals, and one start/stop of the real nginx (no replica needed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from k2.config import load_settings
from k2.errors import ConfigError
from k2.services import Launcher
from k2.services.errors import ServiceError, ServiceStartError
from k2.services.process import free_port, port_in_use, wait_until
from k2.services.proxy import ProxyService, find_nginx, nginx_config


def test_upstreams_come_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K2_PROXY__UPSTREAMS", "127.0.0.1:8001, 127.0.0.1:8002")
    assert load_settings().proxy.upstreams == ["127.0.0.1:8001", "127.0.0.1:8002"]
    monkeypatch.setenv("K2_PROXY__UPSTREAMS", '["api-1:8000", "[::1]:8000"]')
    assert load_settings().proxy.upstreams == ["api-1:8000", "[::1]:8000"]


@pytest.mark.parametrize(
    ("upstreams", "why"),
    [
        ("127.0.0.1:8001;x", "is not host:port"),  # a directive smuggled into nginx.conf
        ("127.0.0.1:8001 backup", "is not host:port"),
        ("127.0.0.1", "is not host:port"),
        ("127.0.0.1:70000", "is not host:port"),
        ("127.0.0.1:8001,127.0.0.1:8001", "listed twice"),
    ],
)
def test_bad_upstreams_are_refused_naming_the_setting(upstreams: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"proxy\.upstreams \[K2_PROXY__UPSTREAMS\].*{why}"):
        load_settings(proxy={"upstreams": upstreams})


def test_the_config_listens_on_loopback_and_keeps_every_path_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, proxy={"port": 18081, "upstreams": "127.0.0.1:8001,127.0.0.1:8002"}
    )
    home = tmp_path / "services" / "proxy"
    text = nginx_config(settings.proxy, home)
    assert "listen 127.0.0.1:18081;" in text and "daemon off;" in text
    assert "server 127.0.0.1:8001 max_fails=1" in text and "server 127.0.0.1:8002 max_fails=1" in text
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text  # replaced, never appended
    assert "$upstream_addr" in text
    assert "\nuser " not in text  # not root: no user directive
    paths = [
        word.rstrip(";") for word in text.split() if word.startswith("/") and word != "/"
    ]  # not `location /`
    assert len(paths) >= 8 and all(Path(p).is_relative_to(home) for p in paths), paths
    assert "user alice;" in nginx_config(settings.proxy, home, user="alice").splitlines()[1]


def test_nginx_accepts_the_generated_config(tmp_path: Path) -> None:
    nginx = find_nginx(None)
    assert nginx is not None, "nginx is not installed (scripts/system-deps.sh installs it)"
    home = tmp_path / "proxy"
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (home / "tmp" / name).mkdir(parents=True)
    settings = load_settings(data_dir=tmp_path, proxy={"upstreams": "127.0.0.1:8001,localhost:8002"})
    (home / "nginx.conf").write_text(nginx_config(settings.proxy, home))
    out = subprocess.run([str(nginx), "-t", "-p", f"{home}/", "-c", str(home / "nginx.conf"),
                          "-e", str(home / "error.log")], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_no_upstream_is_a_clear_error_before_anything_is_made(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, proxy={"port": free_port()})
    with pytest.raises(ServiceError, match=r"no upstream: set K2_PROXY__UPSTREAMS"):
        ProxyService(settings).start()
    assert not (tmp_path / "services" / "proxy").exists()


def test_missing_nginx_says_how_to_install_it(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, proxy={"nginx": tmp_path / "no-nginx", "upstreams": "127.0.0.1:8001"}
    )
    with pytest.raises(ServiceError, match=r"apt-get install nginx.*K2_PROXY__NGINX"):
        ProxyService(settings).start()


def test_a_busy_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = load_settings(data_dir=tmp_path, proxy={"port": port, "upstreams": "127.0.0.1:8001"})
        with pytest.raises(ServiceStartError, match=rf"port {port} is already in use.*K2_PROXY__PORT"):
            ProxyService(settings).start()


def test_the_proxy_is_started_by_name_only(tmp_path: Path) -> None:
    launcher = Launcher(load_settings(data_dir=tmp_path))
    assert "proxy" not in launcher.default_names
    assert [s.name for s in launcher.status(["proxy"])] == ["proxy"]


def test_up_status_logs_down_with_the_real_nginx(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, proxy={"port": free_port(), "upstreams": f"127.0.0.1:{free_port()}"}
    )
    launcher = Launcher(settings)
    try:
        (up,) = launcher.up(["proxy"], timeout_s=20)
        assert up.state == "running" and up.pid is not None and up.version
        assert launcher.status(["proxy"])[0].state == "running"
        assert "nginx/" in launcher.logs("proxy")
        pid = up.pid
    finally:
        (down,) = launcher.down(["proxy"])
    assert down.state == "stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_sigkilled_proxy_leaves_nothing_behind_and_starts_again(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, proxy={"port": free_port(), "upstreams": f"127.0.0.1:{free_port()}"}
    )
    launcher = Launcher(settings)
    try:
        (first,) = launcher.up(["proxy"], timeout_s=20)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        assert wait_until(lambda: launcher.status(["proxy"])[0].state == "stale", 10, 0.05)
        assert not port_in_use(settings.proxy.port)  # no orphan worker kept the port
        (second,) = launcher.up(["proxy"], timeout_s=20)
        assert second.state == "running" and second.pid not in (None, first.pid)
    finally:
        launcher.down(["proxy"])
