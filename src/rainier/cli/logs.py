"""`rainier logs`: every rank of a gang, prefixed, followed to the job's end and its outcome."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from rainier.cli.client import Client

TERMINAL = ("succeeded", "failed", "stopped")
POLL_S = 0.25


@dataclass
class RankStream:
    """One task's log, read in chunks, cut into whole lines."""

    rank: int
    offset: int = 0
    partial: str = ""
    done: bool = False
    started: bool = False

    def read(self, c: Client, job_id: str, tail: int | None) -> list[str]:
        params: dict[str, Any] = {"rank": self.rank, "offset": self.offset}
        if not self.started and tail is not None:
            params = {"rank": self.rank, "tail": tail}
        self.started = True
        out = c.get(f"/api/v1/jobs/{job_id}/logs", **params)
        self.offset, self.done = out["offset"], out["done"]
        text = self.partial + out["data"]
        lines = text.split("\n")
        self.partial = lines.pop()
        if self.done and self.partial:
            lines.append(self.partial)
            self.partial = ""
        return lines


def outcome_code(job: dict[str, Any]) -> int:
    """The exit status that says how the job ended: 0 if it succeeded, its failed task's
    code if it failed with one (1 otherwise), 1 if it was stopped."""
    if job["state"] == "succeeded":
        return 0
    code = job.get("exit_code")
    if job["state"] == "failed" and isinstance(code, int) and 0 < code < 256:
        return code
    return 1


def follow(
    c: Client,
    job: dict[str, Any],
    ranks: list[int],
    *,
    tail: int | None,
    keep_following: bool,
    emit: Callable[[str], None],
    note: Callable[[str], None],
) -> dict[str, Any]:
    """Prints the ranks' lines until they are read (and, following, until the job ends);
    returns the job as last seen."""
    streams = [RankStream(r) for r in ranks]
    prefix = len(ranks) > 1
    said = ""
    while True:
        if keep_following and job["state"] == "pending":
            message = f"job {job['name']} is pending: {job['reason']}; waiting for it to start"
            if message != said:
                note(message)
                said = message
            time.sleep(POLL_S)
            job = c.get(f"/api/v1/jobs/{job['id']}")
            continue
        got = False
        for stream in streams:
            if stream.done and stream.started:
                continue
            for line in stream.read(c, job["id"], tail):
                got = True
                emit(f"[rank {stream.rank}] {line}" if prefix else line)
        # without -f: until what is there now is read (a chunk is at most 1 MiB)
        finished = all(s.done for s in streams) or (not keep_following and not got)
        if finished:
            for stream in streams:
                if stream.partial:
                    emit(f"[rank {stream.rank}] {stream.partial}" if prefix else stream.partial)
            return job if not keep_following else c.get(f"/api/v1/jobs/{job['id']}")
        if not got:
            time.sleep(POLL_S)
        if job["state"] not in TERMINAL:
            job = c.get(f"/api/v1/jobs/{job['id']}")


class RankChoice(click.ParamType):
    """A rank (0 or more), or `all`, which is None: every rank."""

    name = "RANK|all"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or value == "all":
            return None
        try:
            rank = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a rank (0, 1, ...) nor 'all'", param, ctx)
        if rank < 0:
            self.fail(f"{rank} is not a rank: ranks count from 0", param, ctx)
        return rank


def stamped(echo: Callable[[str], None]) -> Callable[[str], None]:
    def emit(line: str) -> None:
        echo(
            f"{datetime.now(UTC).isoformat(timespec='milliseconds').replace('+00:00', 'Z')} {line}"
        )

    return emit


@click.command()
@click.argument("job")
@click.option("-f", "--follow", "keep_following", is_flag=True, help="until the job ends")
@click.option(
    "--rank",
    type=RankChoice(),
    help="a task of the gang, or `all` (the default): every rank, each line prefixed",
)
@click.option("--tail", type=click.IntRange(0), help="start from each rank's last N lines")
@click.option(
    "--timestamps",
    is_flag=True,
    help="prefix lines with the UTC time this CLI read them (exact while following)",
)
@click.pass_context
def logs(
    ctx: click.Context,
    job: str,
    keep_following: bool,
    rank: int | None,
    tail: int | None,
    timestamps: bool,
) -> None:
    """Print a job's output: every rank, each line prefixed `[rank N]` when there are several.

    With -f it waits (saying why) while the job is pending, prints until the job ends, and
    exits with the job's outcome: 0 if it succeeded, its task's exit code if it failed."""
    obj = ctx.obj or {}
    c = Client(obj.get("url"), profile=obj.get("profile"))
    found = c.get(f"/api/v1/jobs/{job}")
    ranks = [rank] if rank is not None else list(range(found["nodes"]))
    if rank is not None and rank >= found["nodes"]:
        from rainier.cli.client import UsageError

        raise UsageError(f"rank must be < {found['nodes']}")

    def echo(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    def note(message: str) -> None:
        click.echo(message, err=True)

    last = follow(
        c,
        found,
        ranks,
        tail=tail,
        keep_following=keep_following,
        emit=stamped(echo) if timestamps else echo,
        note=note,
    )
    if keep_following:
        code = outcome_code(last)
        if code:
            note(f"job {last['name']} {last['state']}: {last['reason']}")
        ctx.exit(code)


def stream_logs(c: Client, job: str, rank: int, keep_following: bool) -> Iterator[str]:
    """One rank's output as the chunks arrive, for programs that read it themselves."""
    offset = 0
    while True:
        out = c.get(f"/api/v1/jobs/{job}/logs", rank=rank, offset=offset)
        if out["data"]:
            yield out["data"]
        offset = out["offset"]
        if not keep_following or out["done"]:
            return
        if not out["data"]:
            time.sleep(POLL_S)
