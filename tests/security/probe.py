"""A hostile tenant's job: every way out of its sandbox it can think of, each tried for real.

Run as the job's command (`python -c <this file's text> <targets as JSON>`); it prints one line
`PROBE {"attempt": "escaped: ..." | "blocked: ..."}`. It imports nothing of rainier: a task
sees only what its sandbox shows it.
"""

import contextlib
import ctypes
import json
import os
import signal
import sqlite3
import sys
import urllib.error
import urllib.request

targets = json.loads(sys.argv[1])
results: dict[str, str] = {}


def attempt(name):
    def run(fn):
        if name in targets.get("skip", ()):
            return fn
        try:
            got = fn()
        except Exception as exc:  # the attempt failed: that is what the sandbox is for
            results[name] = f"blocked: {type(exc).__name__}: {exc}"[:300]
        else:
            results[name] = f"escaped: {got!r}"[:300] if got else "blocked: found nothing"
        return fn

    return run


def read(path):
    with open(path, "rb") as fh:
        return fh.read(200)


@attempt("read the database")
def _():
    return read(targets["database"])


@attempt("query the database")
def _():
    conn = sqlite3.connect(f"file:{targets['database']}?mode=ro", uri=True)
    return conn.execute("select name from sqlite_master").fetchall()


@attempt("rewrite its bill in the database")
def _():
    conn = sqlite3.connect(targets["database"])
    conn.execute("delete from usage_lines")
    conn.commit()
    return "deleted"


@attempt("list the control plane's home")
def _():
    return sorted(set(os.listdir(targets["home"])) - {"checkpoints", "work"})


@attempt("read the server's environment")
def _():
    return {k: v for k, v in os.environ.items() if k == targets["server_secret_name"]}


@attempt("read the server's environment through /proc")
def _():
    found = []
    for pid in [*filter(str.isdigit, os.listdir("/proc")), str(targets["server_pid"])]:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if targets["server_secret_value"].encode() in fh.read():
                    found.append(pid)
        except OSError:
            continue
    return found


@attempt("read another tenant's checkpoint")
def _():
    return read(targets["other_checkpoint"])


@attempt("read another tenant's model")
def _():
    return os.listdir(targets["other_model"])


@attempt("read another tenant's logs")
def _():
    return read(targets["other_log"])


@attempt("read another tenant's task records")
def _():
    return os.listdir(targets["other_task_dir"])


@attempt("read the operator's credentials")
def _():
    return read(targets["credentials"])


@attempt("read another tenant's /tmp and shared memory")
def _():
    return [p for d in ("/tmp", "/dev/shm") for p in os.listdir(d) if "alpha" in p]


@attempt("write outside its folders")
def _():
    written = []
    for path in (
        "/etc/rainier-escape",
        "/usr/rainier-escape",
        os.path.join(targets["runtime"], "rainier-escape"),
        os.path.join(targets["home"], "rainier-escape"),
        os.path.join(os.path.dirname(targets["other_checkpoint"]), "planted"),
    ):
        try:
            with open(path, "w") as fh:
                fh.write("x")
            written.append(path)
        except OSError:
            continue
    return written


@attempt("forge its own exit record")
def _():
    path = os.path.join(targets["own_task_dir"], "exit")
    with open(path, "w") as fh:
        fh.write("0")
    return path


@attempt("list another tenant's processes")
def _():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
            if targets["other_marker"].encode() in cmdline.split(b"\0"):
                found.append(pid)
        except OSError:
            continue
    return found


@attempt("signal another tenant's process")
def _():
    os.kill(targets["other_pid"], signal.SIGKILL)
    return targets["other_pid"]


@attempt("signal the control plane")
def _():
    os.kill(targets["server_pid"], signal.SIGTERM)
    return targets["server_pid"]


@attempt("become root")
def _():
    os.setuid(0)
    return os.getuid()


@attempt("read /etc/shadow")
def _():
    return read("/etc/shadow")


@attempt("use a core it was not given")
def _():
    given = os.sched_getaffinity(0)
    everything = set(range(os.cpu_count() or 1)) | set(targets["all_cores"])
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, everything)
    return sorted(os.sched_getaffinity(0) - given)


@attempt("act on another tenant's job with its token")
def _():
    url = f"{targets['control_url']}/api/v1/jobs/{targets['other_job']}/metrics"
    body = json.dumps({"step": 99, "metrics": {"loss": 0.0}}).encode()
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Authorization", f"Bearer {os.environ['RAINIER_TOKEN']}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


@attempt("mount the host's disk")
def _():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"/", b"/tmp", None, 4096 | 16384, None) != 0:  # MS_BIND | MS_REC
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return os.listdir("/tmp")


# the legitimate work still works
with open(os.path.join(os.environ["RAINIER_CHECKPOINT_DIR"], "own-state"), "w") as fh:
    fh.write("mine")
print("OWN", json.dumps({"uid": os.getuid(), "cores": sorted(os.sched_getaffinity(0))}))
print("PROBE", json.dumps(results), flush=True)
