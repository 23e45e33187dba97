"""Run a command as systemd's `ProtectClock=yes` (systemd 252) would: the clock
syscalls, reading ones included, fail with EPERM.

systemd implements ProtectClock= with a seccomp filter over its @clock set
(adjtimex, clock_adjtime, clock_settime, settimeofday…), and the filter
refuses even a read-only adjtimex (modes = 0): systemd issue #26413. This
module installs a filter of the same kind in this process, with no root
needed (PR_SET_NO_NEW_PRIVS first, as unprivileged seccomp requires), then
execs the command, which inherits it:

    python -m tests.support.noclock -- python -m agent run --config FILE

The filter is the kernel's real one, so what the command sees is exactly
what a sandboxed agent sees: clock_adjtime() returns -1 with errno EPERM.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K
ARCH_OFFSET, NR_OFFSET = 4, 0  # struct seccomp_data: nr, then arch

# The machine's audit arch and its clock syscall numbers (from the kernel's syscall tables).
CLOCK_SYSCALLS = {
    "x86_64": (0xC000003E, {"adjtimex": 159, "settimeofday": 164, "clock_settime": 227,
                            "clock_adjtime": 305}),
    "aarch64": (0xC00000B7, {"adjtimex": 171, "settimeofday": 170, "clock_settime": 112,
                             "clock_adjtime": 266}),
}


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def supported() -> bool:
    return platform.machine() in CLOCK_SYSCALLS


def deny_clock_syscalls() -> None:
    """From now on, in this process and what it execs, every clock syscall fails with EPERM."""
    arch, numbers = CLOCK_SYSCALLS[platform.machine()]
    nrs = list(numbers.values())
    program = [SockFilter(BPF_LD_W_ABS, 0, 0, ARCH_OFFSET),
               # another arch (a 32-bit call on a 64-bit kernel): let it through untouched
               SockFilter(BPF_JEQ_K, 0, len(nrs) + 2, arch),
               SockFilter(BPF_LD_W_ABS, 0, 0, NR_OFFSET)]
    for i, nr in enumerate(nrs):  # a match jumps to the last instruction, EPERM
        program.append(SockFilter(BPF_JEQ_K, len(nrs) - i, 0, nr))
    program += [SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
                SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM)]
    filters = (SockFilter * len(program))(*program)
    prog = SockFprog(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main(argv: list[str]) -> None:
    if argv[:1] != ["--"] or len(argv) < 2:
        raise SystemExit("usage: python -m tests.support.noclock -- COMMAND [ARG…]")
    deny_clock_syscalls()
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
