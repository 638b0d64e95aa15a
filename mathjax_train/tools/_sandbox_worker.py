"""Sandbox supervisor ("zygote"), run as a separate process by `interpreter.py`.

Standard library only, and run as a script (`python -I _sandbox_worker.py`), so it imports nothing
of the package. It talks length-prefixed JSON with the host over its stdin/stdout, sets up the
isolation once (network + mount namespaces; for a non-root caller inside a new user namespace),
then forks one sandboxed child per snippet (or one long-lived child per session) and supervises
it: wall-clock deadline, output cap, crash reports.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import fcntl
import json
import os
import pwd
import random
import resource
import select
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
import traceback

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x08000000, 0x20000000, 0x40000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE = 1024, 2048, 4096, 16384, 1 << 18
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
CAPABILITY_VERSION_3 = 0x20080522
# Directories that are world-writable on a stock Linux; each gets a private tmpfs per snippet.
WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
# Hidden from every snippet (besides the caller's home): per-user runtime dirs hold the sockets of
# agents and session buses, which a read-only mount does not stop a same-uid process connecting to.
PRIVATE_DIRS = ("/run/user",)
# Child fds: 0 stdin (/dev/null), 1+2 output pipe, 3 control (results), 4 commands (code blocks).
CTL_FD, CMD_FD = 3, 4
READY = b"R"  # first byte on the control pipe: death signal armed, ready for code
_HDR = struct.Struct(">I")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _prctl(option: int, arg: int) -> None:
    _check(
        _libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)),
        f"prctl {option}",
    )


def _enter_user_namespace() -> None:
    """For a non-root caller: new user (our uid and gid mapped to themselves), mount, network and
    pid namespaces, then fork, so that this supervisor runs as pid 1 of a pid namespace that our
    user namespace owns (setns back into it before each snippet needs that). The original
    process only waits and exits with it."""
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare(user, mount, net, pid)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)
    pid = os.fork()
    if pid:
        os.closerange(0, 1 << 16)
        status = os.waitpid(pid, 0)[1]
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _drop_capabilities() -> None:
    """Give up every capability (the user namespace grants them all to a non-root supervisor)."""
    for cap in range(64):
        if (
            _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
            != 0
        ):
            break  # EINVAL: past the last capability this kernel knows
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2: all empty
    _check(_libc.capset(header, data), "capset")


def _interpreter_paths() -> list[str]:
    """The directories this Python needs (prefixes, its binary's dir, sys.path, this package),
    outermost only, with symlinks resolved."""
    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    }
    paths |= {p for p in sys.path if p}
    real = {os.path.realpath(p) for p in paths if os.path.isdir(p)}
    return sorted(_outermost(real))


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _outermost(paths) -> list[str]:
    """`paths` without those inside another of them."""
    return [p for p in paths if not any(o != p and _within(p, o) for o in paths)]


def _kept_under(dirs, keep) -> list[str]:
    """The `keep` paths strictly inside one of `dirs`."""
    return [k for k in keep if any(_within(k, d) and k != d for d in dirs)]


def _cover(dirs, keep, options: str) -> list[str]:
    """Mount a fresh tmpfs (`options`) on each of `dirs`, then bind the `keep` paths that were
    under one of them back in place: what a snippet needs stays, the rest is hidden. Binds copy
    the flags of their source (read-only once the supervisor has remounted the tree)."""
    dirs = _outermost(dirs)
    targets = _kept_under(dirs, keep)
    fds = {t: os.open(t, os.O_PATH) for t in targets}  # hold them before the tmpfs hides them
    old = os.umask(0o022)
    try:
        for d in dirs:
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, options)
        for target, fd in fds.items():
            os.makedirs(target, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    finally:
        os.umask(old)
        for fd in fds.values():
            os.close(fd)
    return targets


# ----------------------------------------------------------------------------- framing
def send_msg(fd: int, obj) -> None:
    data = json.dumps(obj).encode()
    view = memoryview(_HDR.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_msg(fd: int):
    """Blocking read of one frame; None on EOF."""
    hdr = _read_exact(fd, _HDR.size)
    if hdr is None:
        return None
    body = _read_exact(fd, _HDR.unpack(hdr)[0])
    return None if body is None else json.loads(body)


# ----------------------------------------------------------------------------- child side
class _CPULimit(TimeoutError):
    pass


def _on_sigxcpu(signum, frame):
    raise _CPULimit("CPU time limit exceeded")


def run_block(code: str, namespace: dict, owner_pid: int) -> dict:
    """Execute one code block like a notebook cell; repr of a trailing expression is printed."""
    reserve = bytearray(1 << 20)  # freed on MemoryError so the report itself can allocate
    error = tb_text = None
    timed_out = False
    try:
        tree = ast.parse(code, "<cell>", "exec")
        last = None
        tail = tree.body[-1] if tree.body else None
        if isinstance(tail, ast.Expr):
            tree.body.pop()
            last = ast.Expression(tail.value)
        exec(compile(tree, "<cell>", "exec"), namespace)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), namespace)
            if value is not None:
                print(repr(value))
    except SystemExit as exc:
        if exc.code not in (None, 0):
            error = f"SystemExit: {exc.code}"
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything
        del reserve
        if os.getpid() != owner_pid:  # a process the snippet forked: never report twice
            _flush_and_exit(1)
        timed_out = isinstance(exc, _CPULimit)
        try:
            lines = traceback.format_exception(type(exc), exc, _last_frames(exc.__traceback__))
            tb_text = "".join(lines)[-4000:]
            only = traceback.format_exception_only(type(exc), exc)
            error = only[-1].strip() if only else type(exc).__name__
            if timed_out:
                error = f"TimeoutError: {exc}"
        except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting
            error = type(exc).__name__
    if os.getpid() != owner_pid:
        _flush_and_exit(0)
    return {"error": error, "traceback": tb_text, "timed_out": timed_out}


def _last_frames(tb, keep: int = 20):
    """Skip the runner's frame and all but the innermost `keep` frames (a RecursionError can
    carry a million of them, and formatting those takes seconds)."""
    tb = tb.tb_next
    depth, cur = 0, tb
    while cur is not None:
        depth, cur = depth + 1, cur.tb_next
    for _ in range(max(0, depth - keep)):
        tb = tb.tb_next
    return tb


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)


def child_main(cfg: dict, persistent: bool) -> None:
    """Body of a sandboxed child (after fork): loop over code blocks from the command pipe."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with its supervisor
    # The supervisor sends code only after this byte, so a child whose supervisor died before the
    # line above gets EPIPE here (nobody holds the read end) and never runs anything.
    os.write(CTL_FD, READY)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes raise OSError instead
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.stdin = open(0, "r", closefd=False)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    me = os.getpid()
    while True:
        msg = recv_msg(CMD_FD)
        if msg is None:
            os._exit(0)
        if persistent:  # per-block soft CPU budget on top of what the session already used
            ru = resource.getrusage(resource.RUSAGE_SELF)
            # rusage lags the runtime RLIMIT_CPU counts, so round up: budget is cpu_s..cpu_s+1
            soft = int(ru.ru_utime + ru.ru_stime) + 1 + int(msg["cpu_s"])
            resource.setrlimit(resource.RLIMIT_CPU, (min(soft, cpu_hard), cpu_hard))
        result = run_block(msg["code"], namespace, me)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - a broken stream must not hide the result
                pass
        send_msg(CTL_FD, result)
        if persistent:  # reap what earlier blocks orphaned (this process is the pid-1 reaper)
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass


def _block_sockets() -> None:
    """Fallback network guard without namespaces: refuse socket creation. Bypassable (ctypes)."""
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the sandbox")

    socket.socket = refuse  # type: ignore[misc,assignment]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.socketpair = refuse  # type: ignore[assignment]


# ----------------------------------------------------------------------------- supervisor
class Capture:
    """Keep the head and tail of a byte stream and count the rest."""

    def __init__(self, keep: int):
        self.head_max, self.tail_max = keep * 3 // 4, keep - keep * 3 // 4
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_max - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            del self.tail[: max(0, len(self.tail) - self.tail_max)]

    def text(self) -> tuple[str, bool]:
        omitted = self.total - len(self.head) - len(self.tail)
        if omitted <= 0:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace"), False
        marker = f"\n...[output truncated: {omitted} bytes omitted]...\n".encode()
        return (bytes(self.head) + marker + bytes(self.tail)).decode("utf-8", "replace"), True


def _signal_error(sig: int) -> str:
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    hints: dict[int, str] = {
        signal.SIGSEGV: " (segmentation fault, e.g. recursion too deep for the C stack)",
        signal.SIGKILL: " (killed)",
        signal.SIGABRT: " (aborted)",
    }
    hint = hints.get(sig, "")
    return f"ProcessCrashed: the interpreter was killed by {name}{hint}"


class Zygote:
    def __init__(self, cfg: dict, req_fd: int):
        self.cfg, self.req_fd = cfg, req_fd
        self.limits = cfg["limits"]
        self.report: dict = {"warnings": []}
        self.session = None  # (pid, out_r, ctl_r, cmd_w, tmpdir) of the live session child
        self.pidns_fd: int | None = None
        self.uid: int | None = None
        self.pending: int | None = None  # killed sandbox not yet reaped (teardown overlaps the next one)
        self.spawned = 0
        self._setup()
        for name in cfg.get("preload", []):
            try:
                __import__(name)
            except Exception as exc:  # noqa: BLE001 - optional module
                self.report["warnings"].append(f"preload {name}: {exc!r}")
        self.report["preloaded"] = [n for n in cfg.get("preload", []) if n in sys.modules]

    # --- one-time isolation -------------------------------------------------------------
    def _setup(self) -> None:
        want = self.cfg.get("isolation", "auto")
        self.userns = False
        if want != "basic":
            try:
                if os.geteuid() != 0:
                    _enter_user_namespace()
                    self.userns = True
                self._setup_namespaces()
                self.report["mode"] = "namespaces"
                return
            except OSError as exc:
                if want == "namespaces":
                    raise
                self.report["warnings"].append(f"namespaces unavailable: {exc}")
        network = (
            "empty network namespace (no interfaces up)" if self.userns else "python-level socket block (bypassable)"
        )
        self.report.update(
            mode="basic",
            uid=os.getuid(),
            network=network,
            filesystem="fresh temp working dir; rest of the filesystem as writable as for the calling user",
            processes="process group kill only",
            missing=[
                "user namespace" if os.geteuid() else "mount namespace",
                "read-only filesystem",
                "private /tmp",
                "pid namespace",
            ]
            + ([] if self.userns else ["network namespace"]),
        )

    def _setup_namespaces(self) -> None:
        if not self.userns:
            _check(_libc.unshare(CLONE_NEWNET | CLONE_NEWNS), "unshare(net, mount)")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        self.keep = _interpreter_paths()
        exposed = self._hide_private_dirs()
        rw_left = self._remount_readonly()
        # the pid namespace snippets' namespaces nest in: the host's for root, else our own
        self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
        self.writable = [d for d in WRITABLE_DIRS if os.path.isdir(d) and not os.path.islink(d)]
        common = dict(
            exposed_paths=exposed,
            rw_mounts_left=rw_left,
            in_private_tmpfs=_kept_under(self.writable, self.keep),
            network="empty network namespace (no interfaces up)",
        )
        tmpfs = (
            f"whole tree read-only; private tmpfs on {', '.join(self.writable)} (the Python "
            f"install bound back read-only); cwd /tmp"
        )
        if self.userns:  # one uid is all an unprivileged user namespace can map: our own
            self.report.update(
                uid=os.getuid(),
                uids=[os.getuid()],
                user_namespace=True,
                **common,
                filesystem=f"{tmpfs}; your home and {', '.join(PRIVATE_DIRS)} hidden; other "
                f"files your account can read stay readable",
                processes="own pid namespace per snippet, your uid with no capabilities",
            )
            return
        # consecutive snippets alternate between uid and uid + 1, so processes of a dying
        # sandbox never count against the RLIMIT_NPROC of the next one
        self.uid = self.cfg.get("uid") or 2 * random.randrange(1_000_000, 1_500_000)
        self.report.update(
            uid=self.uid,
            uids=[self.uid, self.uid + 1],
            user_namespace=False,
            **common,
            filesystem=f"{tmpfs}; closed directories and {', '.join(PRIVATE_DIRS)} hidden",
            processes="own pid namespace per snippet, unprivileged uid",
        )

    def _hide_private_dirs(self) -> list[str]:
        """Cover the caller's home, PRIVATE_DIRS and any closed ancestor of the Python install
        (e.g. /root of /root/.pyenv) with empty tmpfs mounts; the install stays visible."""
        hide = {d for d in PRIVATE_DIRS if os.path.isdir(d)}
        try:
            home = os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir)
            if home != "/" and os.path.isdir(home):
                hide.add(home)
        except KeyError:  # a uid with no passwd entry has no home
            pass
        for path in self.keep:
            cur = "/"
            for part in path.strip("/").split("/"):
                cur = os.path.join(cur, part)
                if not os.stat(cur).st_mode & stat.S_IXOTH:
                    if cur != path:
                        hide.add(cur)
                    else:
                        self.report["warnings"].append(f"{path} is closed to other users")
                    break
        hide = {d for d in hide if not any(_within(d, k) for k in self.keep)}
        return _cover(sorted(hide), self.keep, "size=1m,mode=755")

    @staticmethod
    def _remount_readonly() -> list[str]:
        keep = {
            "nosuid": MS_NOSUID,
            "nodev": MS_NODEV,
            "noexec": MS_NOEXEC,
            "noatime": MS_NOATIME,
            "nodiratime": MS_NODIRATIME,
            "relatime": MS_RELATIME,
            "strictatime": MS_STRICTATIME,
        }
        left = []
        with open("/proc/self/mountinfo") as fh:
            rows = [line.split() for line in fh]
        for row in rows:
            point = row[4].encode().decode("unicode_escape")
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY
            for opt in row[5].split(","):
                flags |= keep.get(opt, 0)
            try:
                _mount(None, point, None, flags)
            except OSError:
                left.append(point)
        return left

    # --- per-snippet child ----------------------------------------------------------------
    def _spawn(self, persistent: bool, cpu_s: int):
        namespaces = self.report["mode"] == "namespaces"
        tmpdir = None
        if not namespaces:
            tmpdir = tempfile.mkdtemp(prefix="mathjax-sbx-", dir=self.cfg.get("tmp_root"))
        if namespaces:  # reset pid_for_children, then give the next child a fresh pid namespace
            _check(_libc.setns(self.pidns_fd, CLONE_NEWPID), "setns(pid)")
            _check(_libc.unshare(CLONE_NEWPID), "unshare(pid)")
        out_r, out_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        cmd_r, cmd_w = os.pipe()
        uid = self.uid + self.spawned % 2 if self.uid is not None else None
        self.spawned += 1
        pid = os.fork()
        if pid == 0:
            try:
                self._child_setup(out_w, ctl_w, cmd_r, tmpdir, persistent, cpu_s, uid)
                child_main(self.cfg, persistent)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
            os._exit(70)
        for fd in (out_w, ctl_w, cmd_r):
            os.close(fd)
        self.reap_pending()
        # wait for READY (or EOF: the child failed in setup, which _supervise then reports)
        ready = os.read(ctl_r, 1)
        if ready not in (READY, b""):
            raise RuntimeError(f"sandbox child sent {ready!r} before its ready byte")
        return pid, out_r, ctl_r, cmd_w, tmpdir

    def _child_setup(self, out_w, ctl_w, cmd_r, tmpdir, persistent, cpu_s, uid) -> None:
        lim = self.limits
        os.setsid()
        # measured before /proc is replaced by the snippet's own
        with open("/proc/self/status") as fh:  # address-space budget on top of the baseline
            vm_kb = next(int(l.split()[1]) for l in fh if l.startswith("VmSize:"))
        mem = vm_kb * 1024 + lim["memory_mb"] * 2**20
        nproc = lim["nproc"]
        if uid is None:  # NPROC counts every process of the caller's own uid
            nproc += _count_uid_processes(os.getuid())
        devnull = os.open(os.devnull, os.O_RDWR)
        # move the sources above the target range first so no dup2 clobbers a later source
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in (devnull, out_w, out_w, ctl_w, cmd_r)]
        for src, dst in zip(high, (0, 1, 2, CTL_FD, CMD_FD)):
            os.dup2(src, dst)
        os.closerange(CMD_FD + 1, 1 << 16)
        if self.report["mode"] == "namespaces":
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare(mount, ipc)")
            _cover(self.writable, self.keep, f"size={lim['tmpfs_mb']}m,mode=1777")
            try:
                _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except OSError:  # a kernel that refuses (masked host /proc): show no processes at all
                _cover(["/proc"], (), "size=1m,mode=555")
            os.chdir("/tmp")
            if uid is None:
                _drop_capabilities()
            else:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            _prctl(PR_SET_DUMPABLE, 0)
        else:
            os.chdir(tmpdir)
            os.environ.update(HOME=tmpdir, TMPDIR=tmpdir)
            _block_sockets()
        os.umask(0o077)
        cpu_hard = lim["session_cpu_s"] if persistent else cpu_s + 1
        for res, (soft, hard) in (
            (resource.RLIMIT_CPU, (cpu_s, cpu_hard)),
            (resource.RLIMIT_AS, (mem, mem)),
            (resource.RLIMIT_FSIZE, (lim["file_mb"] * 2**20,) * 2),
            (resource.RLIMIT_NPROC, (nproc, nproc)),
            (resource.RLIMIT_NOFILE, (lim["nofile"],) * 2),
            (resource.RLIMIT_CORE, (0, 0)),
        ):
            cap = resource.getrlimit(res)[1]  # an ordinary user cannot raise a hard limit
            if cap != resource.RLIM_INFINITY:
                soft, hard = min(soft, cap), min(hard, cap)
            resource.setrlimit(res, (soft, hard))

    def _kill(self, pid: int, tmpdir: str | None):
        """SIGKILL the child (pid-namespace init: takes every process of the snippet along)."""
        for target in (pid, -pid) if tmpdir is not None else (pid,):
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status, ru = os.wait4(pid, 0)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, onerror=_force_remove)
        return status, ru

    def _supervise(self, child, code: str, timeout: float, cpu_s: int, persistent: bool):
        pid, out_r, ctl_r, cmd_w, tmpdir = child
        start = time.monotonic()
        deadline = start + timeout
        cap = Capture(self.limits["output_bytes"])
        ctl = bytearray()
        error = None
        msg = None
        status = ru = None
        timed_out = False
        try:
            send_msg(cmd_w, {"code": code, "cpu_s": cpu_s})
        except BrokenPipeError:
            pass
        open_fds = [out_r, ctl_r]
        while msg is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                error = f"TimeoutError: execution exceeded the {timeout:g} s wall-clock limit"
                break
            ready = select.select(
                open_fds + [self.req_fd], [], [], min(remaining, 0.05) if not open_fds else remaining
            )[0]
            if self.req_fd in ready:  # host closed its end: nobody wants the answer
                self._kill(pid, tmpdir)
                os._exit(0)
            if out_r in ready:
                data = os.read(out_r, 65536)
                if not data:
                    open_fds.remove(out_r)
                cap.add(data)
                if cap.total > self.limits["max_output_bytes"]:
                    error = (
                        f"OutputLimitError: output exceeded {self.limits['max_output_bytes']} bytes; execution stopped"
                    )
                    break
            if ctl_r in ready:
                data = os.read(ctl_r, 65536)
                if not data:
                    open_fds.remove(ctl_r)
                ctl += data
                if len(ctl) >= 4 and len(ctl) >= 4 + _HDR.unpack(ctl[:4])[0]:
                    try:
                        msg = json.loads(bytes(ctl[4 : 4 + _HDR.unpack(ctl[:4])[0]]))
                    except ValueError:
                        msg = {"error": "ProcessCrashed: corrupted result message"}
                    break
                if len(ctl) > 1 << 20:
                    msg = {"error": "ProcessCrashed: corrupted result message"}
            if ctl_r not in open_fds or out_r not in open_fds:
                done, wstatus, wru = os.wait4(pid, os.WNOHANG)
                if done:
                    status, ru = wstatus, wru
                    break
        dead = status is not None
        if msg is not None and not persistent and not dead and tmpdir is None:
            # finished normally: its output is already in the pipe; reap it later
            os.kill(pid, signal.SIGKILL)
            self.pending = pid
            _drain(out_r, cap, wait=False)
            output, truncated = cap.text()
            for fd in (out_r, ctl_r, cmd_w):
                os.close(fd)
            return {
                "ok": msg.get("error") is None,
                "output": output,
                "error": msg.get("error"),
                "timed_out": bool(msg.get("timed_out")),
                "truncated": truncated,
                "traceback": msg.get("traceback"),
                "elapsed_s": round(time.monotonic() - start, 6),
            }, True
        if msg is None or not persistent:
            if not dead:
                status, ru = self._kill(pid, tmpdir)
            elif tmpdir is not None:
                shutil.rmtree(tmpdir, onerror=_force_remove)
            dead = True
        _drain(out_r, cap, wait=dead)
        output, truncated = cap.text()
        if msg is not None:
            error, tb, timed_out = msg.get("error"), msg.get("traceback"), msg.get("timed_out")
        else:
            tb = None
            assert status is not None and ru is not None  # reaped above: msg is None
            if error is None:  # the child died on its own
                if os.WIFSIGNALED(status):
                    sig = os.WTERMSIG(status)
                    if sig == signal.SIGKILL and ru.ru_utime + ru.ru_stime >= cpu_s - 0.05:
                        error, timed_out = f"TimeoutError: CPU time limit of {cpu_s} s exceeded", True
                    else:
                        error = _signal_error(sig)
                elif os.WEXITSTATUS(status) != 0 or persistent:
                    error = f"ProcessExited: the interpreter exited with status {os.WEXITSTATUS(status)}"
        if dead:
            for fd in (out_r, ctl_r, cmd_w):
                os.close(fd)
        return {
            "ok": error is None,
            "output": output,
            "error": error,
            "timed_out": bool(timed_out),
            "truncated": truncated,
            "traceback": tb,
            "elapsed_s": round(time.monotonic() - start, 6),
        }, dead

    # --- requests -------------------------------------------------------------------------
    def handle(self, req: dict) -> dict:
        op = req["op"]
        timeout = float(req.get("timeout_s", 5.0))
        cpu_s = int(req.get("cpu_s") or int(timeout) + 1)
        if op == "run":
            result, _ = self._supervise(self._spawn(False, cpu_s), req["code"], timeout, cpu_s, False)
            return result
        if op == "session_run":
            if self.session is None:
                self.session = self._spawn(True, cpu_s)
            result, dead = self._supervise(self.session, req["code"], timeout, cpu_s, True)
            if dead:
                self.session = None
                result["error"] += (
                    "; the session was restarted and its state (variables, imports) from earlier blocks is lost"
                )
                result["ok"] = False
            return result
        if op == "session_reset":
            self.end_session()
            return {}
        if op == "info":
            return self.report
        raise ValueError(f"unknown op {op!r}")

    def reap_pending(self) -> None:
        if self.pending is not None:
            os.waitpid(self.pending, 0)
            self.pending = None

    def end_session(self) -> None:
        self.reap_pending()
        if self.session is not None:
            pid, out_r, ctl_r, cmd_w, tmpdir = self.session
            self._kill(pid, tmpdir)
            for fd in (out_r, ctl_r, cmd_w):
                os.close(fd)
            self.session = None


def _drain(fd: int, cap: Capture, wait: bool) -> None:
    """Collect output already written; with wait=True read to EOF (all writers are dead)."""
    os.set_blocking(fd, False)
    end = time.monotonic() + 1.0
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            if not wait or time.monotonic() > end:
                break
            select.select([fd], [], [], 0.05)
            continue
        except OSError:
            break
        if not data or cap.total > 4 * cap.head_max + (1 << 20):
            break
        cap.add(data)
    os.set_blocking(fd, True)


def _force_remove(func, path, exc_info) -> None:
    try:
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
        func(path)
    except OSError:
        pass


def _count_uid_processes(uid: int) -> int:
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                n += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return n


def main() -> None:
    req_fd, rep_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.chdir("/")
    cfg = recv_msg(req_fd)
    if cfg is None:
        return
    try:
        zygote = Zygote(cfg, req_fd)
    except BaseException as exc:  # noqa: BLE001 - tell the host why, then stop
        send_msg(rep_fd, {"fatal": f"{type(exc).__name__}: {exc}"})
        return
    send_msg(rep_fd, {"ready": True, "isolation": zygote.report})
    while True:
        if zygote.pending is not None and not select.select([req_fd], [], [], 0.02)[0]:
            zygote.reap_pending()  # idle: finish the teardown now
        req = recv_msg(req_fd)
        if req is None or req.get("op") == "close":
            zygote.end_session()
            return
        try:
            reply = zygote.handle(req)
        except Exception as exc:  # noqa: BLE001 - keep serving; the host sees the error
            reply = {"ok": False, "output": "", "error": f"SandboxError: {exc!r}", "timed_out": False}
        send_msg(rep_fd, reply)


if __name__ == "__main__":
    main()
