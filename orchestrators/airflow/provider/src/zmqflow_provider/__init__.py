"""airflow-provider-zmqflow: Apache Airflow on the zmqflow task and event fabric.

Contract: importing this package imports nothing from Airflow (so the pure
modules, ``keys`` and ``examples.sales``, work without it); the Airflow parts
live in ``hooks``, ``operators``, ``triggers`` and ``queues``.
"""

__version__ = "0.1.0"
