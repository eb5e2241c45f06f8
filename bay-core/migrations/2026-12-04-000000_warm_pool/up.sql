-- The warm pool: a ship created, started and healthy with the default spec and no session,
-- waiting to be handed to a create (RUNNING), or being filled (CREATING). A claim clears the
-- flag in the same transaction that grants the session's relation.
ALTER TABLE ships ADD COLUMN warm BOOLEAN NOT NULL DEFAULT 0;
CREATE INDEX ships_warm ON ships (warm, status, created_at);
