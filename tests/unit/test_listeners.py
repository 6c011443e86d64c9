"""Bind addresses, listening sockets and the peer allow-list."""

import os
import socket
import stat

import pytest

from wsgi_fcgi.listeners import (
    Address,
    ConfigError,
    PeerFilter,
    create_listener,
    is_listening_socket,
    listener_address,
    parse_address,
    remove_unix_socket,
)


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:9000", Address("tcp", host="127.0.0.1", port=9000)),
    (":9000", Address("tcp", host="0.0.0.0", port=9000)),
    ("localhost:0", Address("tcp", host="localhost", port=0)),
    ("[::1]:9000", Address("tcp", host="::1", port=9000)),
    ("unix:/run/app.sock", Address("unix", path="/run/app.sock")),
    ("unix:///run/app.sock", Address("unix", path="/run/app.sock")),
    ("fd://3", Address("fd", fd=3)),
])
def test_parse_address(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("address, text", [
    (Address("tcp", host="::1", port=80), "[::1]:80"), (Address("tcp", host="1.2.3.4", port=80), "1.2.3.4:80"),
    (Address("unix", path="/x"), "unix:/x"), (Address("fd", fd=0), "fd://0"),
])
def test_address_str(address, text):
    assert str(address) == text


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:", "host:port", "1.2.3.4:70000", "unix:",
                                  "fd://x", "[::1]", "::1:9000x"])
def test_bad_addresses(text):
    with pytest.raises(ConfigError):
        parse_address(text)


def test_tcp_listener_and_address_in_use():
    sock = create_listener(parse_address("127.0.0.1:0"))
    try:
        host, port = sock.getsockname()
        assert listener_address(sock) == "127.0.0.1:%d" % port
        assert is_listening_socket(sock.fileno())
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1:%d" % port):
            create_listener(parse_address("127.0.0.1:%d" % port))
    finally:
        sock.close()


def test_unix_listener_mode_stale_file_and_live_server(tmp_path):
    path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on
    sock = create_listener(parse_address("unix:" + path), socket_mode=0o600)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(ConfigError, match="another server"):
            create_listener(parse_address("unix:" + path))
    finally:
        remove_unix_socket(sock)
        sock.close()
    assert not os.path.exists(path)


def test_unix_listener_refuses_to_replace_a_regular_file(tmp_path):
    path = tmp_path / "not-a-socket"
    path.write_text("data")
    with pytest.raises(ConfigError, match="not a socket"):
        create_listener(parse_address("unix:%s" % path))
    assert path.read_text() == "data"


def test_fd_listener_must_be_listening():
    with socket.socket() as plain:
        with pytest.raises(ConfigError, match="not a listening socket"):
            create_listener(Address("fd", fd=plain.fileno()))
    r, w = os.pipe()
    try:
        assert not is_listening_socket(r)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("setting, peer, allowed", [
    ("", ("10.0.0.1", 1), True),
    ("127.0.0.2", ("127.0.0.1", 1), False),
    ("127.0.0.2", ("127.0.0.2", 1), True),
    ("127.0.0.1, 10.0.0.0/8", ("10.1.2.3", 1), True),
    ("127.0.0.1", ("::ffff:127.0.0.1", 1, 0, 0), True),
    ("::1", ("::1", 1, 0, 0), True),
    ("::1", ("127.0.0.1", 1), False),
    ("127.0.0.2", "", True),  # unix socket peers: guarded by file permissions
])
def test_peer_filter(setting, peer, allowed):
    assert PeerFilter.from_setting(setting).allows(peer) is allowed


def test_peer_filter_from_environment(monkeypatch):
    monkeypatch.setenv("FCGI_WEB_SERVER_ADDRS", "127.0.0.2,127.0.0.3")
    peers = PeerFilter.from_setting(None)
    assert peers and not peers.allows(("127.0.0.1", 5)) and peers.allows(("127.0.0.3", 5))


def test_peer_filter_bad_entry():
    with pytest.raises(ConfigError, match="not an IP"):
        PeerFilter.from_setting("127.0.0.1,nonsense")
