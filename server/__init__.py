"""server: see DESIGN.md."""
