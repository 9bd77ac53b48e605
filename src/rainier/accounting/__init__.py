"""The ledger kept in the control plane's database: `rainier.metering`'s pure lines, stored,
queried and produced where the facts change (task time, token usage, reservations, alerts)."""
