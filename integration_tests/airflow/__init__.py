"""Integration tests of Airflow 3 on the fabric (orchestrators/airflow)."""
