"""The ComfyUI HTTP/websocket client (command-line side only; kept out of the registry archive).

- ``client``: ``ComfyClient`` (HTTP with whole-request timeouts) and ``EventStream`` (the websocket).
- ``completion``: waiting for one queued prompt (websocket first, ``/history`` as the truth).
- ``history``: reading ``/history`` and ``/queue`` (an entry's verdict, where a prompt is).
- ``preflight``: is the server there, has it every node class, is there VRAM to spare.
- ``gpu_remote``: GPU snapshots from ``/system_stats``, NVML or ``nvidia-smi``.
- ``server_url``: the one check of a ``--server`` URL.

Nothing is imported here, so ``import scene_telemetry.comfy_api.server_url`` stays cheap.
"""
