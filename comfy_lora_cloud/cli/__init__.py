"""`lora-cloud`: one Typer per noun (cli/<noun>.py), joined in :mod:`.main`."""
