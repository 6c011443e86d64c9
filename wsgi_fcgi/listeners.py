"""Listening sockets: bind addresses, inherited sockets, peer allow-lists."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Iterable
from typing import NamedTuple

from .errors import ConfigError

log = logging.getLogger("wsgi_fcgi")

DEFAULT_BIND = "127.0.0.1:9000"
#: FCGI_LISTENSOCK_FILENO (spec 2.2): the listening socket a spawner passes as fd 0.
LISTENSOCK_FILENO = 0


class Address(NamedTuple):
    kind: str  # "tcp", "unix" or "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return "unix:" + self.path
        if self.kind == "fd":
            return "fd://%d" % self.fd
        return ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)


def parse_address(text: str) -> Address:
    """`HOST:PORT`, `[IPv6]:PORT`, `:PORT`, `unix:PATH` or `fd://N`."""
    if text.startswith("unix:"):
        path = text[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError("bind address %r has no socket path" % text)
        return Address("unix", path=path)
    if text.startswith("fd://"):
        try:
            return Address("fd", fd=int(text[5:]))
        except ValueError:
            raise ConfigError("bind address %r: fd:// takes a file descriptor number" % text) from None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError("bind address %r: write IPv6 as [ADDRESS]:PORT" % text)
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, ""
    if not port.isdigit():
        raise ConfigError("bind address %r needs a port number (HOST:PORT, unix:PATH or fd://N)" % text)
    if int(port) > 65535:
        raise ConfigError("bind address %r: port %s out of range (0-65535)" % (text, port))
    return Address("tcp", host=host or "0.0.0.0", port=int(port))


def is_listening_socket(fd: int) -> bool:
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False
    finally:
        sock.close()


def inherited_fd0_available() -> bool:
    """spawn-fcgi and FastCGI process managers pass the listening socket as fd 0."""
    return is_listening_socket(LISTENSOCK_FILENO)


def create_listener(address: Address, *, backlog: int = 1024, socket_mode: int = 0o660) -> socket.socket:
    if address.kind == "fd":
        if not is_listening_socket(address.fd):
            raise ConfigError("fd://%d is not a listening socket" % address.fd)
        sock = socket.socket(fileno=address.fd)
    elif address.kind == "unix":
        sock = _bind_unix(address.path, backlog, socket_mode)
    else:
        sock = _bind_tcp(address.host, address.port, backlog)
    sock.setblocking(False)
    return sock


def default_bind() -> list:
    """No --bind: the sockets systemd passed (LISTEN_FDS), else the socket a
    FastCGI spawner passed on fd 0, else DEFAULT_BIND."""
    from .systemd import listen_fds
    activated = listen_fds()
    if activated:
        return ["fd://%d" % fd for fd in activated]
    return ["fd://0"] if inherited_fd0_available() else [DEFAULT_BIND]


def bind_listeners(bind, backlog: int = 1024, socket_mode: int = 0o660) -> list:
    """Listening sockets for `bind`: one address, a list, or None (see
    `default_bind`).  All or none: on a ConfigError the ones already bound
    are closed."""
    if bind is None:
        bind = default_bind()
    elif isinstance(bind, str):
        bind = [bind]
    sockets = []
    try:
        for text in bind:
            sockets.append(create_listener(parse_address(text), backlog=backlog, socket_mode=socket_mode))
    except ConfigError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_tcp(host: str, port: int, backlog: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError("cannot resolve bind host %r: %s" % (host, exc)) from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError("cannot listen on %s: %s" % (_format_host_port(host, port), exc.strerror or exc)) from None
    return sock


def _format_host_port(host: str, port: int) -> str:
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def _bind_unix(path: str, backlog: int, socket_mode: int) -> socket.socket:
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o777 & ~socket_mode)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, socket_mode)
        sock.listen(backlog)
        _created[path] = _identity(path)
    except OSError as exc:
        sock.close()
        raise ConfigError("cannot listen on unix:%s: %s" % (path, exc.strerror or exc)) from None
    return sock


#: socket files this process bound: path -> (st_dev, st_ino).  Only these are
#: ever unlinked; a socket inherited from systemd (fd://N, LISTEN_FDS) or a
#: spawner (fd 0) belongs to whoever made it, and must outlive us.
_created: dict = {}


def _identity(path: str) -> tuple:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _remove_stale_socket(path: str) -> None:
    """Replace a socket file left by a dead server; refuse to steal a live one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError("cannot use unix:%s: %s" % (path, exc.strerror)) from None
    if not stat.S_ISSOCK(mode):
        raise ConfigError("cannot listen on unix:%s: the file exists and is not a socket" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a stale socket file
        log.info("removed stale socket file %s", path)
        return
    finally:
        probe.close()
    raise ConfigError("cannot listen on unix:%s: another server is listening there" % path)


def listener_address(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return "unix:" + str(sock.getsockname())
    host, port = sock.getsockname()[:2]
    return _format_host_port(host, port)


def created_socket_path(sock: socket.socket) -> str | None:
    """The socket file of `sock` if this process created it and it is still
    that file (not one a newer server bound at the same path since)."""
    if sock.family != socket.AF_UNIX:
        return None
    try:
        path = sock.getsockname()
        if isinstance(path, str) and path in _created and _identity(path) == _created[path]:
            return path
    except OSError:
        pass
    return None


def remove_unix_socket(sock: socket.socket) -> None:
    """Unlink the socket file of `sock`, only if this process created it."""
    path = created_socket_path(sock)
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass
        _created.pop(path, None)


class PeerFilter:
    """`--allowed-servers` / FCGI_WEB_SERVER_ADDRS (spec 2.2): who may connect over TCP."""

    def __init__(self, allowed: Iterable[str] | None) -> None:
        self.networks = []
        for item in allowed or ():
            item = item.strip()
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError("--allowed-servers: %r is not an IP address or network" % item) from None

    @classmethod
    def from_setting(cls, setting: str | None) -> PeerFilter:
        if setting is None:
            setting = os.environ.get("FCGI_WEB_SERVER_ADDRS", "")
        return cls(setting.split(","))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, peer) -> bool:
        if not self.networks or not isinstance(peer, tuple):
            return True  # no list, or a unix socket peer (file permissions guard those)
        try:
            address = ipaddress.ip_address(peer[0].partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def warn_if_exposed(sockets: list, peers: PeerFilter) -> None:
    if peers:
        return
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = sock.getsockname()[0]
            if not ipaddress.ip_address(host.partition("%")[0]).is_loopback:
                log.warning("listening on %s without --allowed-servers: anyone who can reach "
                            "this address can send FastCGI requests", listener_address(sock))
