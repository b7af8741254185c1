-- Why an event started nothing (no app synced, no trigger with that name, `if` expressions false),
-- written in the ingest transaction for events that matched no function and resumed no wait, so
-- /v1/events/{id} answers with what was true when the event arrived. NULL for every other event.
ALTER TABLE events ADD COLUMN started_nothing TEXT;
