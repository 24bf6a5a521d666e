"""comfy-lora-cloud: photos -> a trained Flux LoRA -> images, from ComfyUI or a shell.

Importable without ComfyUI. Layers (imports point one way):
``comfy/`` and ``cli/`` -> ``service/`` -> ``storage/ providers/ remote/ dataset/ training/``
-> ``models``, ``settings``, ``errors``.
"""

__version__ = "0.1.0"
