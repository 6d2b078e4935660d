# -*- test-case-name: tests.test_probe -*-
"""
A blocking, line-reading client socket that can start TLS part-way, with a
timeout on every operation; and the errors a probe conversation can end in.

The probe reads through its own buffer rather than C{socket.makefile}, so
that it knows exactly which bytes the server sent before the TLS handshake
(a server must send nothing after its go-ahead for STARTTLS) and can wait
for bytes nobody asked for (the STARTTLS injection checks).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

__all__ = [
    "ProbeError",
    "Unreachable",
    "ConnectionClosed",
    "ReplyTimeout",
    "ProtocolError",
    "Target",
    "LineConnection",
]


class ProbeError(Exception):
    """
    A conversation with the server ended before a check could see what it
    wanted.  The message is shown to the operator.
    """


class Unreachable(ProbeError):
    """
    No usable connection: refused, name not found, timed out while
    connecting, or the TLS handshake failed (an untrusted certificate, say).
    """


class ConnectionClosed(ProbeError):
    """
    The server closed the connection while a reply was awaited.
    """


class ReplyTimeout(ProbeError):
    """
    No complete reply within the timeout.
    """


class ProtocolError(ProbeError):
    """
    The server sent something that is not a reply of its protocol.
    """


@dataclass(frozen=True)
class Target:
    """
    Where and how to connect.

    @ivar host: Host name or address.
    @ivar port: TCP port.
    @ivar implicitTLS: Whether TLS starts at once (SMTPS, IMAPS) rather than
        after STARTTLS.
    @ivar tlsContext: Client TLS settings: verification or not.
    @ivar serverName: The name sent in SNI and checked against the
        certificate; L{None} for none.
    @ivar timeout: Seconds allowed for connecting, the handshake, and each
        reply.
    """

    host: str
    port: int
    implicitTLS: bool
    tlsContext: ssl.SSLContext
    serverName: str | None
    timeout: float

    def describe(self) -> str:
        """
        C{host:port}, with brackets around an IPv6 address.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class LineConnection:
    """
    One TCP connection, plaintext until L{startTLS}.

    @ivar encrypted: Whether TLS is up.
    @ivar closed: Whether the server has closed its side (seen as EOF).
    @ivar timedOut: Whether a read timed out: the conversation is out of
        step, so no polite goodbye is worth waiting for.
    """

    maxLineLength = 65536

    def __init__(self, target: Target, sock: socket.socket) -> None:
        self.target = target
        self._socket: socket.socket = sock
        self._buffer = bytearray()
        self.encrypted = False
        self.closed = False
        self.timedOut = False

    @classmethod
    def open(cls, target: Target) -> LineConnection:
        """
        Connect, and start TLS at once when the target says so.

        @raise Unreachable: When no connection (or no TLS) can be had.
        """
        try:
            sock = socket.create_connection(
                (target.host, target.port), timeout=target.timeout
            )
        except OSError as e:
            raise Unreachable(
                f"cannot connect to {target.describe()}: {_describe(e)}"
            ) from None
        connection = cls(target, sock)
        if target.implicitTLS:
            connection.startTLS()
        return connection

    def startTLS(self) -> None:
        """
        Run the TLS handshake on this connection.

        @raise ProtocolError: When the server already sent bytes that the
            handshake would swallow: after its go-ahead it must send nothing
            in plaintext.
        @raise Unreachable: When the handshake fails.
        """
        if self._buffer:
            raise ProtocolError(
                "the server sent plaintext after its go-ahead for TLS: "
                + repr(bytes(self._buffer[:200]))
            )
        try:
            self._socket = self.target.tlsContext.wrap_socket(
                self._socket, server_hostname=self.target.serverName
            )
        except ssl.SSLCertVerificationError as e:
            raise Unreachable(
                f"TLS handshake with {self.target.describe()} failed: "
                f"{e.verify_message or e} (see --cafile and --servername, or "
                "--insecure for a self-signed test server)"
            ) from None
        except (OSError, ssl.SSLError) as e:
            raise Unreachable(
                f"TLS handshake with {self.target.describe()} failed: {_describe(e)}"
            ) from None
        self.encrypted = True

    def send(self, data: bytes) -> None:
        """
        Write C{data} in one piece.
        """
        try:
            self._socket.sendall(data)
        except socket.timeout:
            raise ReplyTimeout("timed out sending to the server") from None
        except OSError as e:
            self.closed = True
            raise ConnectionClosed(
                f"the connection broke while sending: {_describe(e)}"
            ) from None

    def _receive(self) -> bytes:
        try:
            data = self._socket.recv(65536)
        except socket.timeout:
            self.timedOut = True
            raise ReplyTimeout(
                f"no complete reply within {self.target.timeout:g} s"
            ) from None
        except OSError as e:
            self.closed = True
            raise ConnectionClosed(
                f"the connection broke: {_describe(e)}"
            ) from None
        if not data:
            self.closed = True
        return data

    def readLine(self) -> bytes:
        """
        The next line, with its line ending.

        @raise ConnectionClosed: When the server closes first.
        @raise ReplyTimeout: When no whole line comes in time.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > self.maxLineLength:
                raise ProtocolError("a reply line longer than 64 KiB")
            data = self._receive()
            if not data:
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise ConnectionClosed(
                    "the server closed the connection"
                    + (f" after sending {partial!r}" if partial else "")
                )
            self._buffer += data

    def readExactly(self, count: int) -> bytes:
        """
        The next C{count} bytes (an IMAP literal in a reply).
        """
        while len(self._buffer) < count:
            data = self._receive()
            if not data:
                raise ConnectionClosed("the server closed the connection")
            self._buffer += data
        chunk = bytes(self._buffer[:count])
        del self._buffer[:count]
        return chunk

    def unsolicited(self, seconds: float) -> bytes:
        """
        Whatever the server sends, unasked, within C{seconds}: bytes already
        buffered plus anything arriving meanwhile.  A server that has
        nothing to say sends nothing.
        """
        received = bytes(self._buffer)
        self._buffer.clear()
        if self.closed:
            return received
        self._socket.settimeout(seconds)
        try:
            while True:
                data = self._socket.recv(65536)
                if not data:
                    self.closed = True
                    break
                received += data
        except (socket.timeout, ssl.SSLWantReadError):
            pass
        except OSError:
            self.closed = True
        finally:
            if not self.closed:
                self._socket.settimeout(self.target.timeout)
        return received

    @property
    def usable(self) -> bool:
        """
        Whether the conversation can go on: open, and in step.
        """
        return not (self.closed or self.timedOut)

    def close(self) -> None:
        """
        Drop the connection.
        """
        try:
            self._socket.close()
        except OSError:
            pass
        self.closed = True


def _describe(error: BaseException) -> str:
    if isinstance(error, socket.timeout):
        return "timed out"
    if isinstance(error, socket.gaierror):
        return f"name lookup failed ({error.strerror or error})"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
