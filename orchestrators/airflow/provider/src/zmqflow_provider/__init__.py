"""airflow-provider-zmqflow: Apache Airflow on the zmqflow task and event fabric.

Contract: importing this package imports nothing from Airflow (so the pure
module ``keys`` works without it); the Airflow parts live in ``hooks``,
``operators``, ``triggers`` and ``queues``. The example DAGs' data set is
zmqflow.examples.sales (shared with the Prefect flows).
"""

__version__ = "0.1.0"
