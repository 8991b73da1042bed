-- The request headers a function may read (asyncfn.Batch.Headers): a JSON object, or NULL
-- for none.
ALTER TABLE batches ADD COLUMN headers jsonb;
