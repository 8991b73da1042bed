-- Migrations run with search_path set to the store's schema, so names here are unqualified.

-- One row per batch. A NULL time is Go's zero time; times are timestamptz, kept to the
-- microsecond, and compared only with the times callers pass in, never with now().
CREATE TABLE batches (
    function      text        NOT NULL,
    batch_id      text        NOT NULL,
    query_id      text        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    payload       bytea       NOT NULL,
    digest        text        NOT NULL,
    row_count     integer     NOT NULL,
    result        bytea,
    error_kind    text,
    error_message text,
    attempts      integer     NOT NULL,
    max_attempts  integer     NOT NULL,
    owner         text        NOT NULL,
    lease_until   timestamptz,
    run_after     timestamptz,
    created_at    timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz,
    delivered_at  timestamptz,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (function, batch_id)
);

-- Claims read the unfinished rows oldest first and stop after LIMIT: the partial index
-- holds only queued and running rows, in created_at order, so a claim reads about as many
-- entries as it takes plus the running ones it skips, however many finished rows wait for
-- their expiry in the table.
CREATE INDEX batches_claim ON batches (created_at) WHERE state IN ('queued', 'running');

-- Finding abandoned batches (expired lease, no attempts left) on every claim reads only
-- the running rows whose lease has ended, not the whole queue.
CREATE INDEX batches_lease ON batches (lease_until) WHERE state = 'running';

-- Sweeps take the oldest expired rows first; Stats skip the expired ones.
CREATE INDEX batches_expiry ON batches (expires_at);

-- notify publishes a change of a batch on channel when the transaction commits. The payload
-- is JSON, {"b": batch id, "f": function, "s": state}, or {"s": state} alone when the key
-- would make it longer than NOTIFY's 8000-byte limit: then listeners re-read everything.
CREATE FUNCTION notify(channel text, state text, fn text, id text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify(channel, CASE WHEN octet_length(p) < 8000 THEN p ELSE jsonb_build_object('s', state)::text END)
    FROM (SELECT jsonb_build_object('s', state, 'f', fn, 'b', id)::text AS p) AS event
$$;
