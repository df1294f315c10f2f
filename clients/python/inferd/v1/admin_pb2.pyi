from inferd.v1 import inference_pb2 as _inference_pb2
from inferd.v1 import model_config_pb2 as _model_config_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[int]] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _inference_pb2.ModelStatus
    def __init__(self, status: _Optional[_Union[_inference_pb2.ModelStatus, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _inference_pb2.ModelStatus
    def __init__(self, status: _Optional[_Union[_inference_pb2.ModelStatus, _Mapping]] = ...) -> None: ...

class SetTrafficRequest(_message.Message):
    __slots__ = ("name", "version_labels", "traffic")
    class VersionLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABELS_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_FIELD_NUMBER: _ClassVar[int]
    name: str
    version_labels: _containers.ScalarMap[str, int]
    traffic: _containers.RepeatedCompositeFieldContainer[_model_config_pb2.TrafficWeight]
    def __init__(self, name: _Optional[str] = ..., version_labels: _Optional[_Mapping[str, int]] = ..., traffic: _Optional[_Iterable[_Union[_model_config_pb2.TrafficWeight, _Mapping]]] = ...) -> None: ...

class SetTrafficResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _inference_pb2.ModelStatus
    def __init__(self, status: _Optional[_Union[_inference_pb2.ModelStatus, _Mapping]] = ...) -> None: ...

class SetShadowRequest(_message.Message):
    __slots__ = ("name", "shadow", "off")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    OFF_FIELD_NUMBER: _ClassVar[int]
    name: str
    shadow: _model_config_pb2.ShadowPolicy
    off: bool
    def __init__(self, name: _Optional[str] = ..., shadow: _Optional[_Union[_model_config_pb2.ShadowPolicy, _Mapping]] = ..., off: _Optional[bool] = ...) -> None: ...

class SetShadowResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _inference_pb2.ModelStatus
    def __init__(self, status: _Optional[_Union[_inference_pb2.ModelStatus, _Mapping]] = ...) -> None: ...

class RepositoryIndexRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RepositoryModel(_message.Message):
    __slots__ = ("name", "versions_on_disk", "loaded", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_ON_DISK_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions_on_disk: _containers.RepeatedScalarFieldContainer[int]
    loaded: _containers.RepeatedCompositeFieldContainer[_inference_pb2.VersionStatus]
    reason: str
    def __init__(self, name: _Optional[str] = ..., versions_on_disk: _Optional[_Iterable[int]] = ..., loaded: _Optional[_Iterable[_Union[_inference_pb2.VersionStatus, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class RepositoryIndexResponse(_message.Message):
    __slots__ = ("models", "skipped")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[RepositoryModel]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedFolder]
    def __init__(self, models: _Optional[_Iterable[_Union[RepositoryModel, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedFolder, _Mapping]]] = ...) -> None: ...

class SkippedFolder(_message.Message):
    __slots__ = ("folder", "reason")
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    folder: str
    reason: str
    def __init__(self, folder: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
