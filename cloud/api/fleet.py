"""The operator's fleet overview (``GET /v1/fleet``): every gateway's status and
the totals across them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cloud.api.deps import Db, Settings, User, require_role
from cloud.api.gateways import gateway_status

router = APIRouter()


@router.get("/v1/fleet")
async def fleet(db: Db, user: User, st: Settings) -> dict[str, Any]:
    """Every gateway: online or offline (its last status, and how recent),
    backlog, thinned and rejected counts, software version. Operators only."""
    require_role(user, "operator")
    rows = await db.fetch(
        "SELECT g.*, s.gateway_id IS NOT NULL AS has_site,"
        " (SELECT max(stored_through_seq) FROM gateway_epochs e"
        "  WHERE e.gateway_id = g.id) AS stored_through_seq"
        " FROM gateways g LEFT JOIN sites s ON s.gateway_id = g.id ORDER BY g.id"
    )
    gateways = []
    versions: dict[str, int] = {}
    for r in rows:
        status = gateway_status(r, st.online_within_s)
        version = r["software"] or "unknown"
        versions[version] = versions.get(version, 0) + 1
        gateways.append(
            {
                "gateway_id": r["id"],
                **status,
                "status_at": r["status_at"],
                "stored_through_seq": r["stored_through_seq"],
                "claimed": r["claimed_at"] is not None,
                "has_site": r["has_site"],
            }
        )
    online = sum(1 for g in gateways if g["online"])
    return {
        "gateways_total": len(gateways),
        "online": online,
        "offline": len(gateways) - online,
        "backlog_records_total": sum(g["backlog_records"] or 0 for g in gateways),
        "thinned_total": sum(g["thinned_total"] for g in gateways),
        "rejected_total": sum(g["rejected_total"] for g in gateways),
        "software_versions": versions,
        "gateways": gateways,
    }
