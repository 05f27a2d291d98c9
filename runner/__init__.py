"""The headless scene runner (command-line side only; kept out of the registry archive).

- ``scenes``: scene lists, the field mapping and workflow patching.
- ``policy``: the queue-policy knobs (flag > environment > config > default).
- ``runner``: queue scenes on one ComfyUI server, wait, copy or force the marker, write the documents.
- ``workflow_format``: UI-format (``workflow.json``) to API-format conversion with ``/object_info``.
- ``demo``: the pack's nodes run in-process on synthetic frames (no server).

Nothing is imported here; import the module you need.
"""
