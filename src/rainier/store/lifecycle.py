"""The lifecycles of jobs, tasks and deployments: their states and the moves between them.

This is the one place that says which moves are legal. A job's state is what users see
(`pending`, `running`, `stopping`, then one of the ends); a job on its way out also says why in
`stop_cause`, which decides where it goes once its last task is gone: back to the queue (the
scheduler took its chips, or a task could not start), to `stopped` (someone asked) or, after a
failed task, to a restart or to `failed`. The cause is set exactly while the job is `stopping`.

Pure: the functions here change the attributes of whatever row they are given and do no I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATES


class StopCause(StrEnum):
    """Why a `stopping` job stops, which is where it goes next."""

    REQUESTED = "requested"  # a user or the deployment controller: ends `stopped`
    PREEMPTED = "preempted"  # the scheduler needs its chips: back to `pending`
    REQUEUED = "requeued"  # a task could not start on its node: back to `pending`
    TASK_FAILED = "task-failed"  # a rank failed: the gang restarts or the job fails

    @property
    def returns_to_queue(self) -> bool:
        return self in (StopCause.PREEMPTED, StopCause.REQUEUED)


class TaskState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"
    LOST = "lost"


class DeploymentState(StrEnum):
    """Derived, not stored: how a deployment's ready replicas compare with what it wants."""

    SCALED_TO_ZERO = "scaled-to-zero"
    SCALING = "scaling"
    READY = "ready"


ALL_JOB_STATES = tuple(JobState)
TERMINAL_JOB_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED)
# Placed on nodes: holding chips until their tasks are gone.
PLACED_JOB_STATES = (JobState.RUNNING, JobState.STOPPING)
LIVE_JOB_STATES = (JobState.PENDING, *PLACED_JOB_STATES)
LIVE_TASK_STATES = (TaskState.STARTING, TaskState.RUNNING)

JOB_MOVES: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.STOPPED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.STOPPING, JobState.PENDING, JobState.SUCCEEDED, JobState.FAILED}
    ),
    JobState.STOPPING: frozenset(
        {
            JobState.STOPPING,  # a stop asked for while being preempted: the stop wins
            JobState.PENDING,
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.STOPPED,
        }
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.STOPPED: frozenset(),
}
TASK_MOVES: dict[TaskState, frozenset[TaskState]] = {
    TaskState.STARTING: frozenset({TaskState.RUNNING, TaskState.EXITED, TaskState.LOST}),
    TaskState.RUNNING: frozenset({TaskState.EXITED, TaskState.LOST}),
    TaskState.EXITED: frozenset(),
    TaskState.LOST: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A move the lifecycle does not allow: a bug in the caller, never a user's error."""


class JobLike(Protocol):
    state: JobState
    stop_cause: StopCause | None


class TaskLike(Protocol):
    state: TaskState


def can_move_job(current: str, to: JobState) -> bool:
    return to in JOB_MOVES[JobState(current)]


def move_job(job: JobLike, to: JobState, cause: StopCause | None = None) -> None:
    """Moves `job` to `to`; `cause` is given exactly when `to` is `stopping`."""
    if not can_move_job(job.state, to):
        raise IllegalTransition(f"a {job.state} job cannot become {to}")
    if (to is JobState.STOPPING) != (cause is not None):
        raise IllegalTransition(f"a job becoming {to} takes a stop cause only when stopping")
    stays = job.state == JobState.STOPPING and job.stop_cause in (cause, StopCause.REQUESTED)
    if to is JobState.STOPPING and stays:
        return  # a stop asked for stays asked for; the same cause twice changes nothing
    job.state, job.stop_cause = to, cause


def move_task(task: TaskLike, to: TaskState) -> None:
    if to not in TASK_MOVES[TaskState(task.state)]:
        raise IllegalTransition(f"a {task.state} task cannot become {to}")
    task.state = to


def is_stop_requested(job: JobLike) -> bool:
    """Asked to stop for good: by a user, a replaced submission or the deployment controller."""
    return job.state == JobState.STOPPING and job.stop_cause == StopCause.REQUESTED


def is_leaving(job: JobLike) -> bool:
    """Stopping and not coming back: asked to, or its gang failed."""
    if job.state != JobState.STOPPING:
        return False
    return job.stop_cause is None or not StopCause(job.stop_cause).returns_to_queue


def holds_its_name(state: str, cause: str | None) -> bool:
    """A job keeps its name from other submissions while it is pending, running, or on its
    way back to the queue; a job stopping for good frees it (that is how `--replace` works)."""
    if state in (JobState.PENDING, JobState.RUNNING):
        return True
    return state == JobState.STOPPING and cause is not None and StopCause(cause).returns_to_queue


def deployment_state(desired_replicas: int, ready_replicas: int) -> DeploymentState:
    if desired_replicas == 0 and ready_replicas == 0:
        return DeploymentState.SCALED_TO_ZERO
    if ready_replicas >= desired_replicas:
        return DeploymentState.READY
    return DeploymentState.SCALING
