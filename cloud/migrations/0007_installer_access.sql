-- Installer access after hand-over and owner invitations (issue 10); the rules
-- are in cloud/installer_access.py, the check in cloud/auth.py (ACTIVE_INSTALLER).

-- An installer's access to a home: set to end (expires_at) when the owner takes
-- the site over; the owner may keep it (kept_at, no end) or revoke it
-- (revoked_at; the row stays so that the owner's list shows it).
ALTER TABLE site_installers
    ADD COLUMN expires_at  timestamptz,
    ADD COLUMN kept_at     timestamptz,
    ADD COLUMN revoked_at  timestamptz;

-- The owner a site was set up for, by e-mail, until they log in and take it
-- over (handed_over_at): POST /v1/sites answers the same whether or not the
-- e-mail has an account.
ALTER TABLE sites
    ADD COLUMN owner_invite_email  text
        CHECK (length(owner_invite_email) BETWEEN 3 AND 254),
    ADD COLUMN handed_over_at      timestamptz;

CREATE INDEX sites_owner_invite ON sites (lower(owner_invite_email))
    WHERE owner_id IS NULL AND owner_invite_email IS NOT NULL;

-- Sites handed over before this migration: taken over now, and their
-- installers' access ends in 14 days (the default of
-- FUSEBOX_INSTALLER_ACCESS_DAYS) unless the owner keeps it.
UPDATE sites SET handed_over_at = now() WHERE owner_id IS NOT NULL;

UPDATE site_installers i SET expires_at = now() + interval '14 days'
    FROM sites s
    WHERE s.gateway_id = i.gateway_id AND s.owner_id IS NOT NULL;
