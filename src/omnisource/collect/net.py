"""The downloader's sockets: checked addresses, a hard deadline per attempt, and a stop switch.

httpx/httpcore speak HTTP; this module is the network backend under them (``GuardedTransport``):

* **Addresses.** A host is resolved once per attempt (``resolve``, with a timeout), every address
  is checked (``is_public``: loopback, private, link-local such as 169.254.169.254, shared,
  multicast, reserved and the IPv4 addresses embedded in mapped / 6to4 / Teredo / NAT64 IPv6
  addresses are refused unless ``allow_private``), and the socket connects to exactly those
  checked IPs, never to the name again: a DNS answer that changes between check and connect
  (rebinding) has nothing left to change. The connected peer address is checked once more. TLS
  still verifies the certificate against the URL's host name (httpcore passes it as
  ``server_hostname``). Redirect hops go through the same check, hop by hop.
* **Deadline.** ``attempt(deadline, stop)`` scopes one attempt; every connect, TLS handshake,
  read and write runs in slices of at most ``SLICE`` seconds and raises ``DeadlineExceeded`` once
  the attempt's deadline passes, however the server drips its bytes (status line, headers, body).
  httpx's own timeouts (``connect``, ``read`` = longest silence) still apply inside that.
* **Stop.** The same slices check the ``stop`` event (set on Ctrl-C), so requests in flight end
  within ``SLICE`` seconds with ``Stopped``.
"""
from __future__ import annotations

import errno
import ipaddress
import select
import socket
import ssl
import threading
import time
import typing
from contextlib import contextmanager

import httpcore
import httpx
from httpcore import NetworkBackend, NetworkStream

SLICE = 0.25  # seconds: how late a deadline or a stop may be noticed
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_local = threading.local()


class DeadlineExceeded(Exception):
    """The attempt's deadline passed (connect + headers + body)."""


class Stopped(Exception):
    """The download is being stopped (Ctrl-C)."""


class Refused(Exception):
    """A host or address the policy does not allow; the message is the reason."""


@contextmanager
def attempt(deadline: float, stop: threading.Event | None = None, pins: dict | None = None):
    """Run one attempt (in this thread) under `deadline` (time.monotonic()) and the `stop` switch;
    `pins` maps host -> addresses already resolved and checked for this attempt."""
    _local.deadline, _local.stop, _local.pins = deadline, stop, pins if pins is not None else {}
    try:
        yield _local.pins
    finally:
        _local.deadline = _local.stop = _local.pins = None


def _slice(op_timeout: float | None, op_start: float, timeout_exc: type[Exception]) -> float:
    """Seconds the next blocking call may take; raises when the attempt or the operation is over."""
    stop = getattr(_local, "stop", None)
    if stop is not None and stop.is_set():
        raise Stopped()
    now = time.monotonic()
    left = SLICE
    deadline = getattr(_local, "deadline", None)
    if deadline is not None:
        if now >= deadline:
            raise DeadlineExceeded()
        left = min(left, deadline - now)
    if op_timeout is not None:
        op_left = op_start + op_timeout - now
        if op_left <= 0:
            raise timeout_exc("timed out")
        left = min(left, op_left)
    return max(left, 0.001)


# ----------------------------------------------------------------------------- addresses
def is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally routable unicast address, IPv4 addresses embedded in IPv6 ones included."""
    if addr.version == 6:
        embedded = [addr.ipv4_mapped, addr.sixtofour, addr.teredo[1] if addr.teredo else None]
        if addr in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
        if any(e is not None and not is_public(e) for e in embedded):
            return False
    return addr.is_global and not addr.is_multicast


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.split("%")[0])


def resolve(host: str, port: int, timeout: float) -> list[tuple[int, tuple]]:
    """[(family, sockaddr)] of `host`; OSError when it does not resolve within `timeout` seconds
    (getaddrinfo has no timeout of its own, so it runs in a helper thread)."""
    try:
        ip = _ip(host)
    except ValueError:
        ip = None
    if ip is not None:
        return [(socket.AF_INET6, (str(ip), port, 0, 0)) if ip.version == 6 else (socket.AF_INET, (str(ip), port))]
    box: dict = {}

    def lookup():
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            box["error"] = err

    worker = threading.Thread(target=lookup, name="resolve", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise OSError(f"no answer within {timeout:g} s")
    if "error" in box:
        err = box["error"]
        raise OSError(getattr(err, "strerror", None) or str(err))
    seen, out = set(), []
    for family, _, _, _, sockaddr in box.get("infos", []):
        if sockaddr not in seen:
            seen.add(sockaddr)
            out.append((family, sockaddr))
    if not out:
        raise OSError("no addresses")
    return out


def check_addresses(host: str, addrs: list[tuple[int, tuple]], allow_private: bool) -> list[tuple[int, tuple]]:
    """`addrs` unchanged, or Refused when any of them is not public (and private ones are not allowed)."""
    if not allow_private:
        for _, sockaddr in addrs:
            ip = _ip(sockaddr[0])
            if not is_public(ip):
                raise Refused(f"host {host} resolves to a non-public address {ip} (loopback, private, link-local "
                              "or reserved; --allow-private to fetch it)")
    return addrs


# ----------------------------------------------------------------------------- streams
class GuardedStream(NetworkStream):
    """httpcore's SyncStream with every blocking call cut into deadline- and stop-aware slices."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        start = time.monotonic()
        while True:
            self._sock.settimeout(_slice(timeout, start, httpcore.ReadTimeout))
            try:
                return self._sock.recv(max_bytes)
            except socket.timeout:
                continue
            except OSError as err:
                raise httpcore.ReadError(str(err)) from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        start = time.monotonic()
        while buffer:
            self._sock.settimeout(_slice(timeout, start, httpcore.WriteTimeout))
            try:
                buffer = buffer[self._sock.send(buffer):]
            except socket.timeout:
                continue
            except OSError as err:
                raise httpcore.WriteError(str(err)) from None

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> NetworkStream:
        try:
            sock = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname,
                                           do_handshake_on_connect=False)
            start = time.monotonic()
            while True:
                sock.settimeout(_slice(timeout, start, httpcore.ConnectTimeout))
                try:
                    sock.do_handshake()
                    return GuardedStream(sock)
                except socket.timeout:
                    continue
        except (DeadlineExceeded, Stopped, httpcore.ConnectTimeout):
            self.close()
            raise
        except OSError as err:  # ssl.SSLError included: a bad certificate, a non-TLS server
            self.close()
            raise httpcore.ConnectError(f"TLS: {err}") from None

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock._sslobj  # as httpcore's SyncStream does
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            return _readable(self._sock)
        return None


def _readable(sock: socket.socket) -> bool:
    """True when a keep-alive connection has data or EOF waiting (the server closed it)."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _connect(sock: socket.socket, sockaddr: tuple, timeout: float | None) -> None:
    """Non-blocking connect polled in slices (deadline, stop and `timeout` honoured)."""
    sock.setblocking(False)
    err = sock.connect_ex(sockaddr)
    start = time.monotonic()
    if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
        raise OSError(err, errno.errorcode.get(err, str(err)))
    while err:
        _, writable, failed = select.select([], [sock], [sock], _slice(timeout, start, httpcore.ConnectTimeout))
        if writable or failed:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, errno.errorcode.get(err, str(err)))
            break
    sock.setblocking(True)


class GuardedBackend(NetworkBackend):
    """Connects to checked addresses only (see the module docstring)."""

    def __init__(self, allow_private: bool, resolve_timeout: float = 10.0):
        self.allow_private, self.resolve_timeout = allow_private, resolve_timeout

    def addresses(self, host: str, port: int) -> list[tuple[int, tuple]]:
        """The checked addresses of `host` for this attempt (resolved once, then pinned)."""
        pins = getattr(_local, "pins", None)
        if pins is not None and (host, port) in pins:
            return pins[(host, port)]
        timeout = self.resolve_timeout
        deadline = getattr(_local, "deadline", None)
        if deadline is not None:
            timeout = max(min(timeout, deadline - time.monotonic()), 0.001)
        addrs = check_addresses(host, resolve(host, port, timeout), self.allow_private)
        if pins is not None:
            pins[(host, port)] = addrs
        return addrs

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable | None = None) -> NetworkStream:
        try:
            addrs = self.addresses(host, port)
        except OSError as err:
            raise httpcore.ConnectError(f"host {host} does not resolve ({err})") from None
        last: Exception | None = None
        for family, sockaddr in addrs:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                if local_address:
                    sock.bind((local_address, 0))
                _connect(sock, sockaddr, timeout)
                peer = _ip(sock.getpeername()[0])
                if not self.allow_private and not is_public(peer):
                    raise Refused(f"connected to a non-public address {peer}")
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return GuardedStream(sock)
            except (DeadlineExceeded, Stopped, Refused, httpcore.ConnectTimeout):
                sock.close()
                raise
            except OSError as err:
                sock.close()
                last = err
        raise httpcore.ConnectError(str(last))

    def connect_unix_socket(self, *args, **kwargs) -> NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by the downloader")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the connection pool on a GuardedBackend (HTTP/1.1, no proxies)."""

    def __init__(self, allow_private: bool, limits: httpx.Limits, verify: ssl.SSLContext | str | bool = True,
                 resolve_timeout: float = 10.0):
        super().__init__(verify=verify, limits=limits, trust_env=False)
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_private, resolve_timeout))
