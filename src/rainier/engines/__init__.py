"""Serving engines other than rainier's own that a deployment's replicas may run."""
