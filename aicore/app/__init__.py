"""The AICore app: a local web UI over runs folders, data roots, eval reports, thresholds,
prediction and background jobs. ``python -m aicore.app --runs runs --data data``; see
notes/app.md."""
