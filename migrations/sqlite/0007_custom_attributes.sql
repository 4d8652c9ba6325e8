-- Custom posture attributes (`custom:*`) of each node, set through the API or by the node:
-- JSON `{"custom:name": {"value": <string|number|bool>, "expiry": <unix seconds>?}}`.

ALTER TABLE nodes ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
