"""The control loop: reconciler and executors (the only layer that starts processes)."""
