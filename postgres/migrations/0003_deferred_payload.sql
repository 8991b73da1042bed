-- A batch created claimed by the process that runs it may come without its payload, stored
-- only if the batch is not answered on its POST (see asyncfn.Store.Create).
ALTER TABLE batches ALTER COLUMN payload DROP NOT NULL;
