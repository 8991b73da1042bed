-- notify as PL/pgSQL, same payload: a LANGUAGE sql function that cannot be inlined is
-- parsed and planned again on every call, once per state change, which cost a tenth of
-- the server's time under many small batches; PL/pgSQL keeps its plan for the session.
CREATE OR REPLACE FUNCTION notify(channel text, state text, fn text, id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p text := jsonb_build_object('s', state, 'f', fn, 'b', id)::text;
BEGIN
    IF octet_length(p) >= 8000 THEN
        p := jsonb_build_object('s', state)::text;
    END IF;
    PERFORM pg_notify(channel, p);
END
$$;
