"""Scenes across many ComfyUI servers (command-line side only; kept out of the registry archive).

Two scales on one scene-execution core (:class:`runner.scene.SceneExecutor`):

- ``dispatch``: several servers from one process (``run --server URL --server URL …``): pull-based
  scheduling (a server takes its next scene only when it has a free slot), retries on another server,
  quarantine after consecutive failures, one record per scene naming its server. ``servers`` checks and
  names each server; ``stats`` keeps the per-server counts.
- Celery with a Redis broker when one machine is not enough: ``celery_app`` (the app and its settings),
  ``tasks`` (one scene on the worker's server, written into the shared run folder), ``submit`` (queue
  every scene, follow them, write the run documents) and ``inspect`` (``farm status``). Celery is the
  optional ``[farm]`` extra and is imported only by those modules.

``redact`` keeps credentials out of everything printed, logged or recorded. Nothing is imported here.
"""
