#!/bin/sh
# The winning batching config of a tfs-harness study, served by tensorflow/serving:latest (the study measured the reference server).
# 1 CPU(s) and 640 MiB, as the measured trial had. docs/deploy.md
set -e
here=$(cd "$(dirname "$0")" && pwd)
exec docker run -d --name ranker-serving --restart unless-stopped \
  --log-driver json-file --log-opt max-size=10m --log-opt max-file=3 \
  -p 0.0.0.0:8500:8500 -p 0.0.0.0:8501:8501 \
  --cpus 1 --memory 640m \
  -v /work/wt/d2-benchmark/models/ranker:/models/ranker:ro \
  -v "$here/batching_parameters.txt:/config/batching_parameters.txt:ro" \
  -v "$here/monitoring.config:/config/monitoring.config:ro" \
  -e MODEL_NAME=ranker tensorflow/serving:latest \
  --monitoring_config_file=/config/monitoring.config --enable_batching --batching_parameters_file=/config/batching_parameters.txt
