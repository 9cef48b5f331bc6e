"""Backprop: train and serve neural-network classifiers. `from backprop import Client` talks to the API."""

from backprop.client import (
    BackpropError,
    BatchPrediction,
    Client,
    Conflict,
    Dataset,
    Event,
    Forbidden,
    InvalidRequest,
    Job,
    JobCanceled,
    JobFailed,
    Model,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "BackpropError",
    "BatchPrediction",
    "Client",
    "Conflict",
    "Dataset",
    "Event",
    "Forbidden",
    "InvalidRequest",
    "Job",
    "JobCanceled",
    "JobFailed",
    "Model",
    "NotFound",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
]
