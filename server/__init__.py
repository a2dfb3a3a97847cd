"""The OpenAI-compatible HTTP server: ``create_app`` / ``serve`` in app.py, the continuous-batching
scheduler in scheduler.py, Prometheus metrics in metrics.py."""
