"""IntroLLM: learned-temperature decoding, trained and served.

The top floor: ``introllm.cli`` (the ``introllm`` command), ``introllm.commands`` (one module per
subcommand), ``introllm.experiment`` (the study runner) and the shipped default head in ``heads/``.
The libraries install beside it as ``introllm.sampler``, ``.training``, ``.server``, ``.clients``
and ``.benchmarks`` (pyproject ``package-dir``)."""

__version__ = "0.1.0"
