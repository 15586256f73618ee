"""Airflow's local settings hook for Airloop: every Airflow process imports it at start.

It lives in ``include/`` (on the Python path of every Airflow process, here and in the image)
instead of ``$AIRFLOW_HOME/config/``, which is state. Cluster policies and other local
settings go here too.
"""

import sys

from airloop.preload import preload_for

# The scheduler (LocalExecutor) and the Celery worker load the tasks' libraries once, so that
# every task forked from them starts with them loaded (airloop.preload).
preload_for(sys.argv)
