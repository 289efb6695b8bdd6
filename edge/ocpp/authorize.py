"""Local authorisation of id tags (1.6 idTag, 2.0.1 idToken), without the cloud.

Order of decision for a tag (compared case-insensitively, as 1.6 IdToken is):

1. the local authorisation list (``[ocpp] id_tags``): its status, whatever it is
   (a listed Blocked/Expired/Invalid tag is refused even with
   ``allow_unknown_id_tags``);
2. the authorisation cache: a tag answered Accepted within ``id_tag_cache_s``
   stays Accepted after it left the list (to refuse a tag at once, list it as
   Blocked rather than removing it);
3. otherwise ``Invalid``, or ``Accepted`` with ``allow_unknown_id_tags`` (the
   1.6 ``AllowOfflineTxForUnknownId`` idea, for sites that do not manage tags).

Every Accepted answer refreshes the tag's cache entry (durable, in the
transaction store).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from edge.ocpp.config import OcppServerConfig
from edge.ocpp.transactions import TransactionStore
from protocols.times import to_ms

__all__ = ["Authorizer"]

ACCEPTED = "Accepted"
INVALID = "Invalid"


class Authorizer:
    """Answers Authorize for an id tag: the configured local list first, then the
    cache of recently accepted tags, then ``allow_unknown_id_tags``."""

    def __init__(
        self,
        config: OcppServerConfig,
        store: TransactionStore,
        clock: Callable[[], datetime],
    ) -> None:
        self._list: dict[str, str] = {t.id.casefold(): t.status for t in config.id_tags}
        self._allow_unknown = config.allow_unknown_id_tags
        self._cache_ms = config.id_tag_cache_s * 1000
        self._store = store
        self._clock = clock

    async def status(self, id_tag: str) -> str:
        """The authorisation status to answer for ``id_tag``."""
        key = id_tag.casefold()
        now_ms = to_ms(self._clock())
        listed = self._list.get(key)
        status = INVALID if listed is None else listed
        if listed is None:
            if self._cache_ms:
                at_ms = await self._store.cached_at_ms(key)
                if at_ms is not None and now_ms - at_ms <= self._cache_ms:
                    status = ACCEPTED
            if status != ACCEPTED and self._allow_unknown:
                status = ACCEPTED
        if status == ACCEPTED and self._cache_ms:
            await self._store.cache_accepted(key, now_ms)
        return status
