"""Which network interface of this machine holds an address.

A task in the sandbox has the hostname `rainier-task`, which resolves nowhere; gloo, left to
itself, then binds to loopback and a gang spread over several machines cannot connect. The
node's actor tells gloo the interface of the node's own address instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct

SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address


def interface_of(address: str) -> str | None:
    """The name of the interface whose IPv4 address is `address`, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                request = struct.pack("256s", name.encode()[:15])
                answer = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
                if socket.inet_ntoa(answer[20:24]) == address:
                    return name
    return None
