"""A seccomp filter that refuses IP datagram sockets: ``socket(AF_INET|AF_INET6, SOCK_DGRAM, …)``
fails with EACCES; every other system call is untouched.

Why: nacos-sdk-go v2 always starts a UDP push receiver bound to the wildcard address on a random
port 54951–55950 (``clients/naming_client/naming_http/push_receiver.go``: ``us.host`` is never
set, and nothing in the public API sets it). It serves only the HTTP-mode push of the v1
protocol, which a gRPC client never uses; when the socket fails the library logs "failed to start
udp server after trying 3 times" and carries on. Go makes its system calls itself, so LD_PRELOAD
cannot redirect the bind; a filter installed between fork and exec can refuse the socket. A peer
manifest asks for it with ``[process] deny_ip_datagram_sockets = true``.

x86_64 and aarch64 only; elsewhere ``datagram_filter()`` returns None and the caller says so.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

__all__ = ["DatagramFilter", "datagram_filter"]

_ARCH = {  # machine -> (AUDIT_ARCH_*, __NR_socket)
    "x86_64": (0xC000003E, 41),
    "aarch64": (0xC00000B7, 198),
}
_LD_ABS_W = 0x20
_JEQ_K = 0x15
_AND_K = 0x54
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_AF_INET, _AF_INET6, _SOCK_DGRAM, _SOCK_TYPE_MASK = 2, 10, 2, 0xF
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


class DatagramFilter:
    """The compiled program, kept alive in the parent so the child only calls prctl."""

    def __init__(self, audit_arch: int, socket_nr: int) -> None:
        program = b"".join([
            _insn(_LD_ABS_W, 0, 0, 4),              # 0: A = arch
            _insn(_JEQ_K, 0, 8, audit_arch),        # 1: other arch -> allow
            _insn(_LD_ABS_W, 0, 0, 0),              # 2: A = syscall nr
            _insn(_JEQ_K, 0, 6, socket_nr),         # 3: not socket() -> allow
            _insn(_LD_ABS_W, 0, 0, 24),             # 4: A = low word of args[1] (type)
            _insn(_AND_K, 0, 0, _SOCK_TYPE_MASK),   # 5: drop SOCK_NONBLOCK / SOCK_CLOEXEC
            _insn(_JEQ_K, 0, 3, _SOCK_DGRAM),       # 6: not a datagram socket -> allow
            _insn(_LD_ABS_W, 0, 0, 16),             # 7: A = low word of args[0] (domain)
            _insn(_JEQ_K, 2, 0, _AF_INET),          # 8: AF_INET -> deny
            _insn(_JEQ_K, 1, 0, _AF_INET6),         # 9: AF_INET6 -> deny, else allow
            _insn(_RET_K, 0, 0, _RET_ALLOW),        # 10
            _insn(_RET_K, 0, 0, _RET_ERRNO | errno.EACCES),  # 11
        ])
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._prog = _SockFprog(len(program) // 8, ctypes.addressof(self._buffer))
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

    def install_in_child(self) -> None:
        """preexec part: from here on this process (and what it execs and forks) has no IP
        datagram sockets. Exits the child if the kernel refuses (never runs it unfiltered)."""
        if self._prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        if self._prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(self._prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


_cached: DatagramFilter | None | bool = False


def datagram_filter() -> DatagramFilter | None:
    global _cached
    if _cached is False:
        arch = _ARCH.get(platform.machine())
        _cached = DatagramFilter(*arch) if arch else None
    return _cached  # type: ignore[return-value]

