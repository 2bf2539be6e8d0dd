"""``diffuspeech serve``: a local web page and JSON API to talk to a model and watch it denoise."""

from .app import RequestError, ServeApp
from .server import make_server, parse_multipart

__all__ = ["RequestError", "ServeApp", "make_server", "parse_multipart"]
