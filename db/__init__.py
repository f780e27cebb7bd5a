"""PostgreSQL: the pool and migrations, the customer projection, the webhook inbox. All SQL lives here."""
