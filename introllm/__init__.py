"""IntroLLM: learned-temperature decoding, trained and served."""

__version__ = "0.1.0"
