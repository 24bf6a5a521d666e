"""The only package that imports ComfyUI (lazily, inside functions)."""
