"""Runs one task and leaves a record that outlives the control plane.

The local executor starts every task through this wrapper in a new session. The first wrapper
of a task claims it (`<dir>/pid`); any later one leaves at once, so a task runs once however
often a crashing control plane spawned it. The claimant holds an
exclusive lock on `<dir>/lock` while the task lives and writes `<dir>/exit` atomically when the
task ends, so a control plane restarted after a crash can tell "still running" (lock held),
"exited with code N" (exit file) and "lost" (neither) for processes that are not its children.
SIGTERM reaches the whole process group; the wrapper keeps waiting so the task may checkpoint.
When the task ends it first leaves `<dir>/exiting`, then reads the clock into `<dir>/exited_at`
(epoch microseconds): an observer that read its clock before it saw no `exiting` knows the task
held its chips at least until that reading, which is what billing may run up to.

Given `--launch`, the task is described by `<dir>/launch.json` (see `taskrun.TaskRun`): its
environment, cores and, where the machine allows, its sandbox. The wrapper itself stays
outside the sandbox, so the task can neither see nor forge these records; when the task was
killed for memory the wrapper says so in `<dir>/ending` before it writes the exit code, and
with storage by URL it archives the task's log there (`log_archive`) before it writes the
exit code, so a job seen finished has its log in the store.
With `--launch --send-output` the task's output (the wrapper's stdout, `<dir>/output.log`) is
sent to the control plane as it grows, and all of it before the exit code is written.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rainier.control import taskrun
from rainier.control.local import OUTPUT_FILE, write_replacing
from rainier.control.log_archive import archive_log
from rainier.control.logship import LogShipper
from rainier.tasklink import ControlPlane


def main(argv: list[str]) -> int:
    task_dir = Path(argv[0])
    command = argv[2:] if argv[1:2] == ["--"] else argv[1:]
    if not _claim(task_dir):
        return 0
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    started: taskrun.Started | None = None
    shipper: LogShipper | None = None
    run: taskrun.TaskRun | None = None
    try:
        if command[:1] == ["--launch"]:
            run = taskrun.TaskRun.from_json(json.loads((task_dir / "launch.json").read_text()))
            plane = ControlPlane.from_env(run.env)
            if command[1:] == ["--send-output"] and plane is not None:
                rank, attempt = (
                    int(run.env.get("RAINIER_RANK", "0")),
                    int(run.env.get("RAINIER_ATTEMPT", "0")),
                )
                shipper = LogShipper(task_dir / OUTPUT_FILE, plane, rank, attempt).start()
            started = taskrun.start(run, None)
            child = started.proc
        else:
            child = subprocess.Popen(command, close_fds=True)
    except OSError as exc:
        print(f"rainier: cannot start the task: {exc}", file=sys.stderr, flush=True)
        code = 127
    else:
        while True:
            try:
                code = child.wait()
                break
            except InterruptedError:
                continue
    if started is not None:
        code = started.exit_code(code)
        ending = started.ending()
        started.release()
        if ending:
            print(f"rainier: {ending}", file=sys.stderr, flush=True)
            write_replacing(task_dir / "ending", ending)
    if shipper is not None:
        sys.stdout.flush()
        shipper.finish()
    (task_dir / "exiting").touch()
    write_replacing(task_dir / "exited_at", str(time.time_ns() // 1000))
    if run is not None and run.log_path:  # after exited_at: the upload is not the tenant's time
        archive_log(Path(run.log_path), run.env)
    write_replacing(task_dir / "exit", str(code))
    return 0 if code == 0 else 1


def _claim(task_dir: Path) -> bool:
    """Makes this wrapper the task's only one, for good: it holds the lock, and no wrapper
    wrote `pid` before it. A control plane that died while spawning cannot tell whether its
    wrapper got as far as the fork, so a restarted one spawns another; the later of the two
    finds the task claimed and leaves without a trace."""
    lock = os.open(task_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return False
    if (task_dir / "pid").exists():
        os.close(lock)
        return False
    (task_dir / "pid").write_text(str(os.getpid()))
    return True  # the lock stays held until this process exits


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
