-- Payloads and results are compressed with lz4, several times cheaper than the default
-- pglz, where the server was built with it (PostgreSQL 14 and later).
DO $$
BEGIN
    ALTER TABLE batches ALTER COLUMN payload SET COMPRESSION lz4, ALTER COLUMN result SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'lz4 is not available on this server: payloads and results stay compressed with pglz';
END
$$;
