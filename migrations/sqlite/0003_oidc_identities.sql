-- People who sign in through an OpenID Connect provider: (issuer, subject) finds them again
-- whatever their email or name becomes; the groups their provider asserted at the last
-- sign-in are kept for the policy.

ALTER TABLE users ADD COLUMN provider_issuer TEXT;
ALTER TABLE users ADD COLUMN provider_subject TEXT;
ALTER TABLE users ADD COLUMN picture_url TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN provider_groups TEXT NOT NULL DEFAULT '[]';
CREATE UNIQUE INDEX users_provider_identity ON users(provider_issuer, provider_subject)
    WHERE provider_issuer IS NOT NULL;
