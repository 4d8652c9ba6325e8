-- Device approval (`node.approval_required`): a node registered while it is on waits for an
-- administrator. Nodes that existed before are in the tailnet already, so they are approved.

ALTER TABLE nodes ADD COLUMN approved INTEGER NOT NULL DEFAULT 1;
