"""A fake remote ComfyUI for tests; see server.py."""
