"""Storage by URL: where checkpoints, exported models, datasets and finished logs live.

`RAINIER_STORAGE_URL` names the store (`file:///srv/rainier` or `s3://bucket/prefix`; by default
the folder `$RAINIER_HOME/storage`); each tenant has its own prefix below it
(`<storage>/<tenant>/`), and each job its own below that (`<tenant>/jobs/<job id>/`). Nothing
else is shared between machines: a node uploads what it wrote and downloads what it reads into a
cache of its own.

- `location`: parsing, normalising and joining URLs, and telling whether one lies under another.
- `access`: the endpoint and credentials a process uses, and what the control plane hands a
  tenant's task (only that tenant's credentials, where the store has them).
- `fs`: an fsspec filesystem for a URL.
- `publish`: uploading a folder atomically, a manifest written last.
- `cache`: downloading a published folder, or any prefix, into a node-local cache.
"""
