-- Console roles for local accounts (owner, admin, network_admin, it_admin, auditor). The
-- accounts that exist were full administrators, so they stay owners.
ALTER TABLE console_admins ADD COLUMN role TEXT NOT NULL DEFAULT 'owner';
