"""The job and task lifecycles: which moves are legal, and what a stop cause means."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rainier.store.lifecycle import (
    JOB_MOVES,
    TERMINAL_JOB_STATES,
    IllegalTransition,
    JobState,
    StopCause,
    TaskState,
    holds_its_name,
    is_leaving,
    is_stop_requested,
    move_job,
    move_task,
)


@dataclass
class Row:
    state: JobState
    stop_cause: StopCause | None = None


@dataclass
class TaskRow:
    state: TaskState


def test_ended_jobs_never_move() -> None:
    for end in TERMINAL_JOB_STATES:
        for to in JobState:
            with pytest.raises(IllegalTransition):
                move_job(Row(end), to, StopCause.REQUESTED if to is JobState.STOPPING else None)


def test_every_state_is_reachable_from_pending() -> None:
    seen, todo = {JobState.PENDING}, [JobState.PENDING]
    while todo:
        for nxt in JOB_MOVES[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert seen == set(JobState)


def test_a_stop_cause_exactly_while_stopping() -> None:
    job = Row(JobState.RUNNING)
    with pytest.raises(IllegalTransition):
        move_job(job, JobState.STOPPING)
    with pytest.raises(IllegalTransition):
        move_job(job, JobState.SUCCEEDED, StopCause.REQUESTED)
    move_job(job, JobState.STOPPING, StopCause.PREEMPTED)
    assert (job.state, job.stop_cause) == (JobState.STOPPING, StopCause.PREEMPTED)
    move_job(job, JobState.PENDING)
    assert (job.state, job.stop_cause) == (JobState.PENDING, None)


def test_a_pending_job_cannot_stop_gradually() -> None:
    with pytest.raises(IllegalTransition):
        move_job(Row(JobState.PENDING), JobState.STOPPING, StopCause.REQUESTED)


def test_a_requested_stop_wins_over_any_other_cause() -> None:
    job = Row(JobState.STOPPING, StopCause.PREEMPTED)
    move_job(job, JobState.STOPPING, StopCause.REQUESTED)
    assert job.stop_cause is StopCause.REQUESTED and is_stop_requested(job)
    move_job(job, JobState.STOPPING, StopCause.PREEMPTED)
    assert job.stop_cause is StopCause.REQUESTED


@pytest.mark.parametrize(
    ("state", "cause", "holds", "leaving"),
    [
        (JobState.PENDING, None, True, False),
        (JobState.RUNNING, None, True, False),
        (JobState.STOPPING, StopCause.PREEMPTED, True, False),
        (JobState.STOPPING, StopCause.REQUEUED, True, False),
        (JobState.STOPPING, StopCause.REQUESTED, False, True),
        (JobState.STOPPING, StopCause.TASK_FAILED, False, True),
        (JobState.SUCCEEDED, None, False, False),
    ],
)
def test_where_a_stopping_job_goes(
    state: JobState, cause: StopCause | None, holds: bool, leaving: bool
) -> None:
    assert holds_its_name(state, cause) is holds
    assert is_leaving(Row(state, cause)) is leaving


def test_tasks_end_once() -> None:
    task = TaskRow(TaskState.STARTING)
    move_task(task, TaskState.RUNNING)
    move_task(task, TaskState.EXITED)
    for to in TaskState:
        with pytest.raises(IllegalTransition):
            move_task(task, to)
