"""TF Serving Predict over REST, the same traffic `harness run` and `harness tune` send.

    locust -f "$(harness locustfile rest)" --host http://127.0.0.1:8501 --model-name ranker

Options as in grpc.py.
"""

from harness.load.rest_user import RestPredictUser


class TFServingRestUser(RestPredictUser):
    pass
