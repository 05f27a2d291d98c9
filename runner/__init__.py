"""The headless scene runner (command-line side only; kept out of the registry archive).

Inputs: ``scenes`` (scene lists, mappings, target resolution), ``checks`` (against ``/object_info``),
``patching`` (a scene's prompt), ``workflow_format`` (editor → API format with ``/object_info``), ``policy``
(the queue-policy knobs). Before the run: ``prepare`` (inputs, ``--out``, preflight, checks → ``PreparedRun``).
One attempt: ``attempt.run_attempt`` (submit or re-attach, wait within one ``telemetry.Deadline``).
One scene on one server: ``scene.SceneExecutor`` (attempts and retries, then ``markers`` / ``forced``,
``documents``, ``gpu``). The run: ``runner.Runner`` (every scene, ``state`` for ``--resume``, the run
documents, validation). Shared shapes: ``options``, ``outcomes``. ``demo`` runs the pack's nodes
in-process on synthetic frames (no server).

Nothing is imported here; import the module you need.
"""
