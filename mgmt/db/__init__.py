"""The management server's database: engine, models, migrations, jobs, tenancy."""
