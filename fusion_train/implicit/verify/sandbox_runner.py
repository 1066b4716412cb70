"""Run one untrusted program inside the code verifier's sandbox (started by :mod:`.code`, never imported).

``python -I -B sandbox_runner.py CONFIG_JSON``. In this order, before the untrusted code runs:

1. resource limits: address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU), size of any written file
   (RLIMIT_FSIZE), no core dumps; lowering limits needs no privilege;
2. when started as root: drop to the unprivileged uid/gid (``nobody`` by default) with no supplementary
   groups, so the kernel refuses writes anywhere that is not world-writable;
3. RLIMIT_NPROC for that user (a fork bomb is capped even past the audit hook);
4. an audit hook (PEP 578) that refuses, from Python code: sockets and name lookups, new processes
   (fork, exec, spawn, subprocess, os.system), signals to other processes, and opening for writing,
   creating, removing, renaming or changing any path outside the working directory (this stops writes to
   world-writable places such as /tmp that the uid alone allows). An audit hook is not a security
   boundary against hostile code (ctypes can step around it); the uid, the limits and, where available, the
   namespaces the parent adds (``unshare``: no network, own PID namespace) are.

Then the program (``solution.py`` in the working directory) runs as ``__main__``; its exit status is the
verdict (0 = pass).
"""
import json
import os
import resource
import sys


def _limits(cfg):
    mem = int(cfg["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(cfg["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    fsize = int(cfg["file_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _drop_privileges(cfg):
    if os.geteuid() != 0 or cfg.get("uid") is None:
        return
    os.setgroups([])
    os.setgid(int(cfg["gid"]))
    os.setuid(int(cfg["uid"]))
    if os.geteuid() == 0:  # pragma: no cover - setuid must not silently fail
        sys.exit(99)


def _install_hook(workdir):
    root = os.path.realpath(workdir)
    blocked = {
        "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
        "socket.sendto", "socket.sendmsg", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn",
        "os.system", "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn", "os.startfile",
        "urllib.Request", "http.client.connect", "ftplib.connect", "smtplib.connect", "webbrowser.open",
    }
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod",
                   "os.chown", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
                   "os.setxattr", "os.removexattr", "os.chdir", "os.chroot"}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path):
        if isinstance(path, int):
            return True  # an already open descriptor
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        full = os.path.realpath(os.path.join(root, os.fspath(path)))
        return full == root or full.startswith(root + os.sep)

    def hook(event, args):
        if event in blocked:
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writes and path is not None and not inside(path):
                raise PermissionError("sandbox: writing %s (outside the working directory) is not allowed" % (path,))
        elif event in path_events:
            for p in args[:2]:
                if isinstance(p, (str, bytes, os.PathLike)) and not inside(p):
                    raise PermissionError("sandbox: %s on %s (outside the working directory) is not allowed"
                                          % (event, p))

    sys.addaudithook(hook)


def main():
    cfg = json.loads(sys.argv[1])
    workdir = cfg["workdir"]
    os.chdir(workdir)
    _limits(cfg)
    _drop_privileges(cfg)
    nproc = int(cfg["max_processes"])
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    sys.path[:0] = [workdir]
    source = open(os.path.join(workdir, "solution.py"), encoding="utf-8").read()
    code = compile(source, "solution.py", "exec")
    _install_hook(workdir)
    del sys.argv[1:]
    exec(code, {"__name__": "__main__", "__file__": "solution.py", "__builtins__": __builtins__})


if __name__ == "__main__":
    main()
