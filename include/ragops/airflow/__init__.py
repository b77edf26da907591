"""The only place Airflow is imported: assets, hooks, callbacks, shared default_args, task glue."""
