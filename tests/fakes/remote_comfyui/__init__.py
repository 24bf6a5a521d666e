"""A fake remote ComfyUI for the session tests (a process the image's supervisor starts, with
the websocket, real output files and model folders); see server.py. tests/fakes/comfyui.py is
another stand-in: a queue-shape fake for the LoRA tests of issue 12."""
