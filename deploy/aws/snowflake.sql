-- asyncfn on AWS: the Snowflake side. `make sql` writes build/snowflake.sql, this file with
-- {{API_URL}} and {{SNOWFLAKE_ROLE_ARN}} replaced by the stack's outputs ApiUrl and
-- SnowflakeRoleArn. Run it as ACCOUNTADMIN (or a role allowed CREATE INTEGRATION), in two
-- steps: the integration, then, once the stack trusts it (README.md), the functions.

-- Step 1: the API integration: Snowflake assumes the stack's role to call the API.
CREATE OR REPLACE API INTEGRATION asyncfn_api
  API_PROVIDER = aws_api_gateway
  API_AWS_ROLE_ARN = '{{SNOWFLAKE_ROLE_ARN}}'
  API_ALLOWED_PREFIXES = ('{{API_URL}}')
  ENABLED = TRUE;

-- API_AWS_IAM_USER_ARN and API_AWS_EXTERNAL_ID go into the role's trust policy:
-- make deploy PARAMETERS="SnowflakeIamUserArn=... SnowflakeExternalId=..."
DESCRIBE INTEGRATION asyncfn_api;

-- Step 2: the external functions, one per path of the API. A batch's request and its answer
-- must each fit in AWS Lambda's 6 MB: 4,096 rows of texts of a few hundred characters do.
CREATE OR REPLACE EXTERNAL FUNCTION sentiment(text VARCHAR)
  RETURNS VARIANT
  API_INTEGRATION = asyncfn_api
  MAX_BATCH_ROWS = 4096
  AS '{{API_URL}}sentiment';

CREATE OR REPLACE EXTERNAL FUNCTION vader(text VARCHAR)
  RETURNS VARIANT
  API_INTEGRATION = asyncfn_api
  MAX_BATCH_ROWS = 4096
  AS '{{API_URL}}vader';

CREATE OR REPLACE EXTERNAL FUNCTION echo(v VARIANT)
  RETURNS VARIANT
  API_INTEGRATION = asyncfn_api
  MAX_BATCH_ROWS = 4096
  AS '{{API_URL}}echo';

-- Only with the stack's Comprehend parameter true (AWS bills each text): the original sample's
-- sentiment by Amazon Comprehend, in the default language or in the one given.
-- CREATE OR REPLACE EXTERNAL FUNCTION comprehend(text VARCHAR)
--   RETURNS VARIANT API_INTEGRATION = asyncfn_api MAX_BATCH_ROWS = 4096 AS '{{API_URL}}comprehend';
-- CREATE OR REPLACE EXTERNAL FUNCTION comprehend(text VARCHAR, language VARCHAR)
--   RETURNS VARIANT API_INTEGRATION = asyncfn_api MAX_BATCH_ROWS = 4096 AS '{{API_URL}}comprehend';

-- A test: NEUTRAL, then POSITIVE with its scores.
SELECT column1 AS text, sentiment(column1) AS sentiment
FROM VALUES ('hello world'), ('I am happy');
