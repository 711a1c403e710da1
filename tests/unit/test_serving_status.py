"""One table maps every domain error to a gRPC status code."""

from __future__ import annotations

import inspect

import grpc
import pytest

from loopline.contracts import errors
from loopline.serving.status import STATUS_BY_ERROR, status_for


def _error_classes() -> list[type[errors.LooplineError]]:
    return [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.LooplineError)
    ]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidRequestError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.SchemaError("x", "f"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ModelNotFoundError("x"), grpc.StatusCode.NOT_FOUND),
        (errors.UnavailableError("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.OverloadedError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.FingerprintMismatchError("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.IntegrityError("x"), grpc.StatusCode.INTERNAL),
        (RuntimeError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_codes(error: BaseException, code: grpc.StatusCode) -> None:
    assert status_for(error) is code


def test_every_loopline_error_has_a_row_and_subclasses_come_first() -> None:
    kinds = [k for k, _ in STATUS_BY_ERROR]
    for cls in _error_classes():
        assert any(issubclass(cls, k) for k in kinds), cls
    for i, k in enumerate(kinds):
        for later in kinds[i + 1 :]:
            assert not issubclass(later, k) or later is k, f"{later} is shadowed by {k}"
