"""PostgreSQL: the pool, every SQL statement, the migrations. Imports nothing above it."""
