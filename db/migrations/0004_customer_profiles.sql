-- What Sumsub verified about each customer (issue 9): one document per customer, written by the worker's
-- profile activity after a GREEN review and on every applicantPersonalInfoChanged, never by the workflow's
-- state (so verified personal data stays out of Temporal). `profile` is domain.profile.VerifiedProfile as
-- JSON: personal_info for a person, company_info (with its beneficiaries) for a company.

CREATE TABLE customer_profiles (
    customer_id  uuid PRIMARY KEY REFERENCES customers (id),
    applicant_id text NOT NULL,
    profile      jsonb NOT NULL,
    verified_at  timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
