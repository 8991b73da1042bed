-- The rows saved by asyncfn.Store.Checkpoint while a batch runs, one row each, so that a
-- checkpoint writes only its own rows; they go with their batch when it is swept.
CREATE TABLE saved_rows (
    function text    NOT NULL,
    batch_id text    NOT NULL,
    number   integer NOT NULL,
    value    bytea   NOT NULL,
    PRIMARY KEY (function, batch_id, number),
    FOREIGN KEY (function, batch_id) REFERENCES batches ON DELETE CASCADE
);
-- The bytes given to Checkpoint over the batch's life (asyncfn.MaxSavedBytes).
ALTER TABLE batches ADD COLUMN saved_bytes bigint NOT NULL DEFAULT 0;
