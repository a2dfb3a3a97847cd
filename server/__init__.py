"""The OpenAI-compatible HTTP server (installed as ``introllm.server``; depends on ``introllm.sampler``).

app.py ``create_app`` / ``serve``; routes.py the handlers; prepare.py a request checked once into
a ``Plan``; scheduler.py continuous batching, producing one ``records.Token`` per generated token;
responses.py the JSON built from those records; tokens.py each token's own bytes and OpenAI name;
openapi.py the OpenAPI document; state.py loading the model; metrics.py Prometheus metrics.
"""
