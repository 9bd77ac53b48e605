"""Every bound a document's value has, in one place: they keep what a user writes within what
the columns, the scheduler's arithmetic, the ledger's integers and `exec` can hold, so that a
document is refused at the edge instead of failing a control loop later. The models of
`rainier.spec` apply them; docs/limits.md lists them.
"""

from __future__ import annotations

from decimal import Decimal

MAX_CHIPS_PER_NODE = 1024
MAX_NODES_PER_JOB = 8192
MAX_CONTRACT_CHIPS = 1_000_000  # per flavor: guaranteed or borrowable chips of one contract
MAX_WEIGHT = 1_000_000.0
MAX_DURATION_S = 366 * 86400
MAX_STEPS = 100_000_000
MAX_TRAIN_TOKENS = 10**15
MAX_LABEL_CHARS = 63
MAX_ADDRESS_CHARS = 255
MAX_DISPLAY_NAME_CHARS = 200
MAX_URL_CHARS = 2048
MAX_PATH_CHARS = 4096
MAX_PATH_COMPONENT_CHARS = 255
MAX_ENV_VARS = 256
MAX_ENV_BYTES = (
    64 * 1024
)  # all of a job's `env`, as `NAME=value` strings; exec takes 128 KiB a string
MAX_COMMAND_ARGS = 4096
MAX_COMMAND_BYTES = 64 * 1024
MAX_OVERRIDES = 64
MAX_OVERRIDE_INT = 2**31 - 1
MAX_RPM = 1_000_000
MAX_INFLIGHT_PER_REPLICA = 10_000
MAX_BATCH_TOKENS = 1 << 20
MAX_REPLICAS = 1000
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# The names of tenants, jobs, deployments, contracts...: a DNS label.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# The ledger keeps money as integer micro-dollars in 64 bits: 9.2e12 USD at most.
MAX_COMMITTED_USD = Decimal("1000000000000")
