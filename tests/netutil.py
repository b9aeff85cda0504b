"""Which addresses a process listens on, read from /proc (Linux), and a local
address of this machine that is not loopback."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Optional


def _hex_address(text: str) -> tuple[str, int]:
    """``"0100007F:0BB8"`` (as /proc/net/tcp writes it) -> ``("127.0.0.1", 3000)``."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1])), int(port, 16)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # four host-order 32-bit words
    return str(ipaddress.IPv6Address(words)), int(port, 16)


def listening(pid: Optional[int] = None) -> set[tuple[str, int]]:
    """``(address, port)`` of every TCP socket in LISTEN state, of process
    ``pid`` only when given (its sockets found through /proc/PID/fd)."""
    inodes: Optional[set[str]] = None
    if pid is not None:
        inodes = set()
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and (inodes is None or cols[9] in inodes):  # 0A: LISTEN
                out.add(_hex_address(cols[1]))
    return out


def other_address() -> Optional[str]:
    """An IPv4 address of this machine that is not loopback (the source of its
    default route), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if ipaddress.ip_address(addr).is_loopback or addr == "0.0.0.0" else addr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(address: str, port: int) -> bool:
    """Whether a TCP connection to ``address:port`` is refused."""
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((address, port)) != 0
