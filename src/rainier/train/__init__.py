"""The training runtime a job runs on its chips: `python -m rainier.train --help`.

A plain program: it imports `rainier.spec` at most and talks to the control plane only through
its environment (`RAINIER_*`, torch.distributed's variables) and HTTP.
"""
