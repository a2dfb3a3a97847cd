"""clients: see DESIGN.md."""
