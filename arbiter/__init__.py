"""Arbiter: a self-hosted videoconferencing server in one trio process."""

__version__ = "0.1.0"
