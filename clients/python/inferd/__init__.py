"""inferd-client: call an inferd gRPC inference server with numpy arrays.

from inferd import Client
with Client("127.0.0.1:8001", timeout=5) as client:
    outputs = client.predict("resnet", {"images": batch})
"""

from inferd import errors
from inferd.client import AsyncClient, Client
from inferd.control import AsyncModelControl, ModelControl
from inferd.errors import InferdError
from inferd.feedback import FeedbackResult
from inferd.predictions import Prediction, StreamChunk
from inferd.tls import TlsFiles

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncModelControl",
    "Client",
    "FeedbackResult",
    "InferdError",
    "ModelControl",
    "Prediction",
    "StreamChunk",
    "TlsFiles",
    "__version__",
    "errors",
]
