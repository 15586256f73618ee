# One image for every Airloop service: the Airflow components (api-server, scheduler,
# dag-processor, triggerer, Celery worker), the MLflow server and the Bento prediction server.
# The compose file and the Helm values (chart/values.yaml) run it with different commands.
#
# The base is the official Airflow image at the version requirements.lock pins. Where registry
# images cannot be pulled, AIRFLOW_BASE_IMAGE names a local equivalent with the same contract
# (docker/local-base/build.sh builds one from Debian packages; tests/stack/compose_run.py).
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

# DVC keeps the data registry's history in git. (0 is root, 50000 the image's airflow user.)
USER 0
RUN apt-get update \
 && apt-get install -y --no-install-recommends git=1:2.* \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
USER 50000

# Dependencies first, every version pinned by the lock, so code changes do not reinstall them.
COPY --chown=50000:0 requirements.txt requirements.lock /opt/airloop/
RUN pip install --no-cache-dir -r /opt/airloop/requirements.txt -c /opt/airloop/requirements.lock

# The project in place: DAGs, plugins, the airloop package (importable through PYTHONPATH) with
# the model specs, and the Feast feature repository.
COPY --chown=50000:0 include/ /opt/airflow/include/
COPY --chown=50000:0 dags/ /opt/airflow/dags/
COPY --chown=50000:0 plugins/ /opt/airflow/plugins/
COPY --chown=50000:0 feature_repo/ /opt/airflow/feature_repo/
COPY --chown=50000:0 docker/airflow-init.sh /opt/airloop/airflow-init.sh
COPY --chown=50000:0 docker/mlflow-server.sh /opt/airloop/mlflow-server.sh

# Where state lives; compose mounts a named volume on each. Created here, owned by airflow, so a
# new volume starts with the right owner.
RUN mkdir -p /opt/airflow/airloop/predictions /opt/airflow/dvc-remote /opt/airflow/reports \
             /opt/airflow/bentoml /opt/airflow/mlflow-artifacts /opt/airflow/config

ENV PYTHONPATH=/opt/airflow/include \
    AIRLOOP_HOME=/opt/airflow/airloop \
    AIRLOOP_MODELS_DIR=/opt/airflow/include/models \
    AIRLOOP_FEATURE_REPO=/opt/airflow/feature_repo \
    AIRLOOP_DVC_REMOTE=/opt/airflow/dvc-remote \
    AIRLOOP_REPORTS_DIR=/opt/airflow/reports \
    BENTOML_HOME=/opt/airflow/bentoml \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    BENTOML_DO_NOT_TRACK=true \
    DVC_NO_ANALYTICS=1 \
    GX_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    OMP_NUM_THREADS=1
