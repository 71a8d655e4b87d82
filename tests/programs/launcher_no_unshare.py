"""Run a command in which unshare(2) fails with EPERM, as under Docker's default seccomp profile.

A seccomp filter (inherited across fork, exec and setuid) answers every
unshare(2) with EPERM: to the launcher running as an ordinary user this looks
like unprivileged user namespaces being disabled. Only x86_64 and aarch64 are
known; elsewhere this exits 77 so the test can skip.

With --ptrace, ptrace(2) is refused too (as where Yama or a seccomp profile
forbids tracing): the test-side sandbox cannot catch its command's exit then.

usage: launcher_no_unshare.py [--ptrace] COMMAND [ARG...]
Independent of pyinit on purpose: the tool must not depend on the code under test.
"""

import ctypes
import errno
import os
import platform
import struct
import sys

# machine -> (AUDIT_ARCH_*, __NR_unshare, __NR_ptrace)
ARCHES = {"x86_64": (0xC000003E, 272, 101), "aarch64": (0xC00000B7, 97, 117)}
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
OFFSET_NR, OFFSET_ARCH = 0, 4  # in struct seccomp_data


class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def main():
    command = sys.argv[1:]
    with_ptrace = command[:1] == ["--ptrace"]
    command = command[1:] if with_ptrace else command
    if platform.machine() not in ARCHES or not command:
        sys.exit(77)
    arch, unshare_nr, ptrace_nr = ARCHES[platform.machine()]
    refused = [unshare_nr, ptrace_nr] if with_ptrace else [unshare_nr]
    count = len(refused)
    instructions = [
        (BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        (BPF_JEQ_K, 0, count + 1, arch),  # another ABI: allow
        (BPF_LD_W_ABS, 0, 0, OFFSET_NR),
        *[(BPF_JEQ_K, count - index, 0, number) for index, number in enumerate(refused)],  # jump to EPERM
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM),
    ]
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in instructions)
    buffer = ctypes.create_string_buffer(code, len(code))
    program = Program(len(instructions), ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    if libc.prctl(PR_SET_NO_NEW_PRIVS, ulong(1), ulong(0), ulong(0), ulong(0)) != 0 or \
            libc.prctl(PR_SET_SECCOMP, ulong(SECCOMP_MODE_FILTER), ctypes.byref(program), ulong(0), ulong(0)) != 0:
        sys.exit("launcher_no_unshare: cannot install the filter: %s" % os.strerror(ctypes.get_errno()))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
