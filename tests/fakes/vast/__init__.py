"""A fake vast.ai server for tests; see server.py."""
