"""Typed errors. Every failure a user can cause has its own class and a message naming the problem."""

from __future__ import annotations


class RevsegError(Exception):
    """Base class for errors raised by revseg-agent."""


class VideoError(RevsegError):
    """The video is missing, unreadable, empty, or a requested frame does not exist."""


class InputError(RevsegError):
    """A user-supplied argument is invalid (empty query, bad frame count, ...)."""


class CheckpointError(RevsegError):
    """A model checkpoint does not exist or does not match its configuration."""


class ResourceError(RevsegError):
    """The machine ran out of something a model needs (e.g. GPU memory)."""


class PipelineFailure(RevsegError):
    """The reasoning chain ended without a result; the trace holds the per-step errors."""

    def __init__(self, message: str, *, node: str, code: str) -> None:
        super().__init__(message)
        self.node = node
        self.code = code
