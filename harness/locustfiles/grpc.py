"""TF Serving Predict over gRPC, the same traffic `harness run` and `harness tune` send.

    locust -f "$(harness locustfile grpc)" --host grpc://127.0.0.1:8500 --model-name ranker \
        --request-sizes 1:50,4:30,16:20

(`harness locustfile grpc` prints where this file is installed; in a checkout it is also
locustfiles/grpc.py.) Options: --model-name, --signature-name, --request-sizes, --payload
(example requests: a TF Serving REST request body, a directory of them or an .npz;
docs/payloads.md), --input-shapes (random values: NAME=D1,D2;...), --arrival-rate (open loop),
--arrivals, --request-timeout, --record-dir (also as LOCUST_... variables and in the web UI).

    locust -f "$(harness locustfile grpc)" --host grpc://127.0.0.1:8500 --model-name image_jpeg \
        --payload jpegs.json --request-sizes 1:50,8:50

As a worker of a harness run or tune on another machine (options come from the master; the
samples are shipped to it over Locust's own channel, see docs/distributed.md):

    locust -f "$(harness locustfile grpc)" --worker --master-host HARNESS_HOST --master-port 5557
"""

import os
import sys

# Locust imports this file under its own name, "grpc", which hides the gRPC package: hand the
# name back before anything imports grpc. The folder is compared resolved, since it may be
# reached through a link (a checkout's locustfiles/).
if sys.modules.get("grpc") is sys.modules.get(__name__) and __name__ == "grpc":
    del sys.modules["grpc"]
    _here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _here]

from harness.load.grpc_user import GrpcPredictUser  # noqa: E402


class TFServingGrpcUser(GrpcPredictUser):
    pass
