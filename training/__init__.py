"""training: see DESIGN.md."""
