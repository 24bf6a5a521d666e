"""The one API that nodes, routes and the CLI share."""
