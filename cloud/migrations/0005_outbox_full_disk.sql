-- Full disk on a gateway (issue 16): readings it could not keep, by reason.
-- thinned_disk_total: of thinned_total, power samples thinned because the disk
-- (not outbox.cap_mb) ran short. refused_*_total: readings the outbox refused
-- (left with the device, which keeps and resends them; each refusal counts) at
-- the cap, or with the disk full.
ALTER TABLE gateways
    ADD COLUMN thinned_disk_total bigint NOT NULL DEFAULT 0,
    ADD COLUMN refused_cap_total  bigint NOT NULL DEFAULT 0,
    ADD COLUMN refused_disk_total bigint NOT NULL DEFAULT 0;
