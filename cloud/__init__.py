"""Fusebox cloud services: ingest workers, the HTTP API, (later) the scheduler.

Each service is its own process in production (``fusebox cloud ingest``,
``fusebox cloud api``); ``fusebox cloud run`` runs them all in one for a small
installation or the demo. They share only PostgreSQL and the MQTT broker.

Exception tree::

    CloudError
    └── MigrationError   the schema could not be brought up to date
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error the cloud raises on purpose."""


class MigrationError(CloudError):
    """The database schema could not be migrated; the message says why."""
