"""The Fusebox edge agent: meters in, durable outbox, uplink to the cloud.

Exception tree::

    EdgeError
    ├── ConfigError          bad config file; exit code 2, message names field and fix
    └── OutboxError
        └── OutboxFull       nothing more fits under the cap after thinning
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the edge raises on purpose."""


class ConfigError(EdgeError):
    """The edge config is invalid; the message names the field and the fix."""


class OutboxError(EdgeError):
    """The outbox could not do what was asked."""


class OutboxFull(OutboxError):
    """The outbox is at its cap and holds nothing left to thin (only cumulative
    registers and events, which are never dropped). Do not acknowledge the device:
    retry later, the broker keeps the message meanwhile."""
