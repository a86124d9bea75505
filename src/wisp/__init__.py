"""Wisp: a serverless functions platform on the function-pulling scheduler design."""

__version__ = "0.1.0"
