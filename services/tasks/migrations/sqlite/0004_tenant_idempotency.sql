-- Idempotency keys are unique per tenant: the stored key carries its tenant
-- (`<tenant length>:<tenant>:<key>`), and each keyed task keeps a fingerprint of the request
-- that created it, so a different request reusing the key is refused. Keys stored before this
-- move to the scope of the task's user (the tenant of the client that submitted it).
ALTER TABLE tasks ADD COLUMN request_hash TEXT;
UPDATE tasks SET idempotency_key =
    length(coalesce(user_id, '')) || ':' || coalesce(user_id, '') || ':' || idempotency_key
    WHERE idempotency_key IS NOT NULL;
