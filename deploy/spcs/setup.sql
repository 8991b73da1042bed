-- asyncfn on Snowpark Container Services: the image repository, a compute pool, the
-- service (from service.yaml beside this file) and the service functions that call it.
-- Run as a role that may create compute pools and services (ACCOUNTADMIN, or one granted
-- CREATE COMPUTE POOL and BIND SERVICE ENDPOINT).

CREATE DATABASE IF NOT EXISTS asyncfn_db;
USE SCHEMA asyncfn_db.public;

-- 1. The image repository, then push the image from a machine with Docker:
CREATE IMAGE REPOSITORY IF NOT EXISTS asyncfn_repo;
SHOW IMAGE REPOSITORIES LIKE 'asyncfn_repo';
--   repository_url is <org>-<account>.registry.snowflakecomputing.com/asyncfn_db/public/asyncfn_repo
--   docker login <org>-<account>.registry.snowflakecomputing.com -u <user>
--   docker build --platform linux/amd64 -t <repository_url>/asyncfn:latest .
--   docker push <repository_url>/asyncfn:latest

-- 2. Where it runs: one small CPU node is plenty for VADER; add nodes for heavier functions.
CREATE COMPUTE POOL IF NOT EXISTS asyncfn_pool
  MIN_NODES = 1
  MAX_NODES = 1
  INSTANCE_FAMILY = CPU_X64_XS
  AUTO_RESUME = TRUE;

-- 3. The service, from the specification uploaded to a stage:
CREATE STAGE IF NOT EXISTS asyncfn_specs DIRECTORY = (ENABLE = TRUE);
--   PUT file://deploy/spcs/service.yaml @asyncfn_specs AUTO_COMPRESS = FALSE OVERWRITE = TRUE;
CREATE SERVICE IF NOT EXISTS asyncfn
  IN COMPUTE POOL asyncfn_pool
  FROM @asyncfn_specs SPECIFICATION_FILE = 'service.yaml'
  -- One instance: the SQLite store belongs to one process. (To run several, use a
  -- PostgreSQL store shared by all instances.)
  MIN_INSTANCES = 1
  MAX_INSTANCES = 1;
-- Or inline: CREATE SERVICE asyncfn IN COMPUTE POOL asyncfn_pool FROM SPECIFICATION $$ <service.yaml> $$;

SELECT SYSTEM$GET_SERVICE_STATUS('asyncfn');
SELECT SYSTEM$GET_SERVICE_LOGS('asyncfn', 0, 'asyncfn', 50);

-- 4. The service functions: SQL names mapped to the service's routes at endpoint "api".
CREATE OR REPLACE FUNCTION sentiment(text VARCHAR)
  RETURNS VARIANT
  SERVICE = asyncfn
  ENDPOINT = api
  MAX_BATCH_ROWS = 4096
  AS '/sentiment';

CREATE OR REPLACE FUNCTION vader(text VARCHAR)
  RETURNS VARIANT
  SERVICE = asyncfn
  ENDPOINT = api
  MAX_BATCH_ROWS = 4096
  AS '/vader';

CREATE OR REPLACE FUNCTION echo(x VARIANT)
  RETURNS VARIANT
  SERVICE = asyncfn
  ENDPOINT = api
  AS '/echo';

-- 5. Who may call them: the service role of service.yaml, granted to the analysts' role.
CREATE ROLE IF NOT EXISTS asyncfn_user;
GRANT USAGE ON DATABASE asyncfn_db TO ROLE asyncfn_user;
GRANT USAGE ON SCHEMA asyncfn_db.public TO ROLE asyncfn_user;
GRANT SERVICE ROLE asyncfn!asyncfn_caller TO ROLE asyncfn_user;
GRANT USAGE ON FUNCTION sentiment(VARCHAR) TO ROLE asyncfn_user;
GRANT USAGE ON FUNCTION vader(VARCHAR) TO ROLE asyncfn_user;

-- Try it:
SELECT t.text, sentiment(t.text) AS s
  FROM (VALUES ('hello world'), ('I am happy'), ('I love the food but I hate the service')) AS t(text);
