"""Run the fake ComfyUI as ComfyUI's main.py would be run by the inference image's supervisor:

    python -m tests.fakes.remote_comfyui --listen 127.0.0.1 --port P --output-directory D \
        --extra-model-paths-config models.yaml --disable-auto-launch
"""

from .server import main

if __name__ == "__main__":
    main()
