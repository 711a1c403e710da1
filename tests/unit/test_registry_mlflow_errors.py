"""MLflow's errors as Loopline's: a missing version or artifact, an unreachable server."""

from __future__ import annotations

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

from loopline.contracts.errors import ModelError, ModelNotFoundError, UnavailableError
from loopline.registry.mlflow_registry import mlflow_errors


def not_found() -> requests.HTTPError:
    response = requests.Response()
    response.status_code = 404
    return requests.HTTPError("404 Client Error: Not Found", response=response)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (
            MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST),
            ModelNotFoundError,
        ),
        # What a failed artifact download (a version without a manifest) raises.
        (
            MlflowException(
                "The following failures occurred while downloading one or more artifacts "
                "from mlflow-artifacts:/1/x:\n##### File manifest.json #####\n"
                "404 Client Error: Not Found for url: http://127.0.0.1:5000/x"
            ),
            ModelNotFoundError,
        ),
        (not_found(), ModelNotFoundError),
        (requests.ConnectionError("Connection refused"), UnavailableError),
        (
            MlflowException("API request failed with exception Max retries exceeded"),
            UnavailableError,
        ),
        (MlflowException("bad alias name", error_code=INVALID_PARAMETER_VALUE), ModelError),
    ],
)
def test_mlflow_errors_become_loopline_errors(raised: Exception, expected: type) -> None:
    with pytest.raises(expected) as caught, mlflow_errors("http://127.0.0.1:5000", "fraud v3"):
        raise raised
    assert type(caught.value) is expected
    assert "MLflow at http://127.0.0.1:5000" in str(caught.value)
