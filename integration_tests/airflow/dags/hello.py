from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag


@dag(schedule=None)
def hello():
    BashOperator(task_id="where", bash_command="hostname")


hello()
