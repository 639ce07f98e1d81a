-- Start of the migration history. schema_migrations itself is created by the runner;
-- later migrations add the tables of each concern.
SELECT 1;
