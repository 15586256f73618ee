# One image for every Airloop service: Airflow components, the MLflow server and the Bento server.
FROM apache/airflow:3.3.2-python3.11

# DVC keeps the data registry's history in git.
USER 0
RUN apt-get update \
 && apt-get install -y --no-install-recommends git=1:2.* \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
USER 50000

# Dependencies first, pinned by the lock, so code changes do not reinstall them.
COPY --chown=airflow:root requirements.txt requirements.lock /opt/airloop/
RUN pip install --no-cache-dir -r /opt/airloop/requirements.txt -c /opt/airloop/requirements.lock

COPY --chown=airflow:root include/ /opt/airflow/include/
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root feature_repo/ /opt/airflow/feature_repo/

ENV PYTHONPATH=/opt/airflow/include \
    AIRLOOP_HOME=/opt/airflow/airloop \
    AIRLOOP_MODELS_DIR=/opt/airflow/include/models \
    AIRLOOP_FEATURE_REPO=/opt/airflow/feature_repo \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    BENTOML_DO_NOT_TRACK=true \
    DVC_NO_ANALYTICS=1 \
    GX_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    OMP_NUM_THREADS=1
