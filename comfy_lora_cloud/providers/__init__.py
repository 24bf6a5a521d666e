"""GPU providers: vast.ai and this machine."""
