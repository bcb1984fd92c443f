"""Example data for the orchestrator examples (Airflow DAGs, Prefect flows) and their tests.

Contract: pure Python, no orchestrator and no sockets, so that every image
that installs zmqflow (Airflow's, Prefect's) and the host's tests share one
definition of each example data set.
"""
