-- Keyset pagination of the customer list (`customers` in GraphQL), newest or oldest first.
--
-- A page is `WHERE <filter> AND (created_at, id) < (cursor) ORDER BY created_at DESC, id DESC LIMIT n`.
-- Each equality filter gets an index that leads with it and then holds the sort key, so the page is read
-- from the index in order and stops after n rows, however many customers match. `customers_created_at_id`
-- (0001) serves no filter and the createdAfter/createdBefore range. When several filters are combined,
-- one of these indexes is scanned and the other conditions are checked on its rows; a combination far
-- rarer than its parts (ACTIVE with AWAITING_KYC: none) reads all rows of one part, about 10-50 ms at
-- 100,000 customers (tests/test_graphql_queries.py prints the plans and times).

CREATE INDEX customers_status_created_at_id ON customers (status, created_at, id);
CREATE INDEX customers_customer_type_created_at_id ON customers (customer_type, created_at, id);
CREATE INDEX customers_kyc_status_created_at_id ON customers (kyc_status, created_at, id);
CREATE INDEX customers_onboarding_stage_created_at_id ON customers (onboarding_stage, created_at, id);

-- `me`: the customer whose Keycloak user a token's `sub` names.
CREATE INDEX customers_keycloak_user_id ON customers (keycloak_user_id) WHERE keycloak_user_id IS NOT NULL;

