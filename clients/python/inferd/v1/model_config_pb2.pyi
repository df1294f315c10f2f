from inferd.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorSpec(_message.Message):
    __slots__ = ("name", "data_type", "dims")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    data_type: _tensor_pb2.DataType
    dims: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., data_type: _Optional[_Union[_tensor_pb2.DataType, str]] = ..., dims: _Optional[_Iterable[int]] = ...) -> None: ...

class VersionPolicy(_message.Message):
    __slots__ = ("latest", "all", "specific")
    class Latest(_message.Message):
        __slots__ = ("num_versions",)
        NUM_VERSIONS_FIELD_NUMBER: _ClassVar[int]
        num_versions: int
        def __init__(self, num_versions: _Optional[int] = ...) -> None: ...
    class All(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Specific(_message.Message):
        __slots__ = ("versions",)
        VERSIONS_FIELD_NUMBER: _ClassVar[int]
        versions: _containers.RepeatedScalarFieldContainer[int]
        def __init__(self, versions: _Optional[_Iterable[int]] = ...) -> None: ...
    LATEST_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    SPECIFIC_FIELD_NUMBER: _ClassVar[int]
    latest: VersionPolicy.Latest
    all: VersionPolicy.All
    specific: VersionPolicy.Specific
    def __init__(self, latest: _Optional[_Union[VersionPolicy.Latest, _Mapping]] = ..., all: _Optional[_Union[VersionPolicy.All, _Mapping]] = ..., specific: _Optional[_Union[VersionPolicy.Specific, _Mapping]] = ...) -> None: ...

class DynamicBatching(_message.Message):
    __slots__ = ("max_queue_delay_microseconds", "preferred_batch_sizes", "max_queue_size", "default_timeout_microseconds", "priority_levels", "default_priority_level", "always_wait_for_window")
    MAX_QUEUE_DELAY_MICROSECONDS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TIMEOUT_MICROSECONDS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_LEVELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PRIORITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_WAIT_FOR_WINDOW_FIELD_NUMBER: _ClassVar[int]
    max_queue_delay_microseconds: int
    preferred_batch_sizes: _containers.RepeatedScalarFieldContainer[int]
    max_queue_size: int
    default_timeout_microseconds: int
    priority_levels: int
    default_priority_level: int
    always_wait_for_window: bool
    def __init__(self, max_queue_delay_microseconds: _Optional[int] = ..., preferred_batch_sizes: _Optional[_Iterable[int]] = ..., max_queue_size: _Optional[int] = ..., default_timeout_microseconds: _Optional[int] = ..., priority_levels: _Optional[int] = ..., default_priority_level: _Optional[int] = ..., always_wait_for_window: _Optional[bool] = ...) -> None: ...

class ModelWarmup(_message.Message):
    __slots__ = ("input_kind", "batch_sizes", "count")
    class InputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INPUT_KIND_UNSPECIFIED: _ClassVar[ModelWarmup.InputKind]
        INPUT_KIND_ZERO: _ClassVar[ModelWarmup.InputKind]
        INPUT_KIND_RANDOM: _ClassVar[ModelWarmup.InputKind]
        INPUT_KIND_FILE: _ClassVar[ModelWarmup.InputKind]
    INPUT_KIND_UNSPECIFIED: ModelWarmup.InputKind
    INPUT_KIND_ZERO: ModelWarmup.InputKind
    INPUT_KIND_RANDOM: ModelWarmup.InputKind
    INPUT_KIND_FILE: ModelWarmup.InputKind
    INPUT_KIND_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    input_kind: ModelWarmup.InputKind
    batch_sizes: _containers.RepeatedScalarFieldContainer[int]
    count: int
    def __init__(self, input_kind: _Optional[_Union[ModelWarmup.InputKind, str]] = ..., batch_sizes: _Optional[_Iterable[int]] = ..., count: _Optional[int] = ...) -> None: ...

class TrafficWeight(_message.Message):
    __slots__ = ("label", "weight")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    label: str
    weight: int
    def __init__(self, label: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class ShadowPolicy(_message.Message):
    __slots__ = ("label", "version", "fraction")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    label: str
    version: int
    fraction: float
    def __init__(self, label: _Optional[str] = ..., version: _Optional[int] = ..., fraction: _Optional[float] = ...) -> None: ...

class Streaming(_message.Message):
    __slots__ = ("chunk_rows", "max_active_streams", "max_waiting_streams", "max_buffered_outputs", "max_step_streams")
    CHUNK_ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_WAITING_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_BUFFERED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEP_STREAMS_FIELD_NUMBER: _ClassVar[int]
    chunk_rows: int
    max_active_streams: int
    max_waiting_streams: int
    max_buffered_outputs: int
    max_step_streams: int
    def __init__(self, chunk_rows: _Optional[int] = ..., max_active_streams: _Optional[int] = ..., max_waiting_streams: _Optional[int] = ..., max_buffered_outputs: _Optional[int] = ..., max_step_streams: _Optional[int] = ...) -> None: ...

class ModelConfig(_message.Message):
    __slots__ = ("name", "engine", "engine_preference", "max_batch_size", "input", "output", "version_policy", "dynamic_batching", "version_labels", "traffic", "shadow", "warmup", "streaming", "instance_count", "parameters", "execution", "drift", "feedback")
    class VersionLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    VERSION_POLICY_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_BATCHING_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABELS_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    name: str
    engine: str
    engine_preference: _containers.RepeatedScalarFieldContainer[str]
    max_batch_size: int
    input: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    output: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    version_policy: VersionPolicy
    dynamic_batching: DynamicBatching
    version_labels: _containers.ScalarMap[str, int]
    traffic: _containers.RepeatedCompositeFieldContainer[TrafficWeight]
    shadow: ShadowPolicy
    warmup: _containers.RepeatedCompositeFieldContainer[ModelWarmup]
    streaming: Streaming
    instance_count: int
    parameters: _containers.ScalarMap[str, str]
    execution: str
    drift: DriftPolicy
    feedback: FeedbackPolicy
    def __init__(self, name: _Optional[str] = ..., engine: _Optional[str] = ..., engine_preference: _Optional[_Iterable[str]] = ..., max_batch_size: _Optional[int] = ..., input: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., output: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., version_policy: _Optional[_Union[VersionPolicy, _Mapping]] = ..., dynamic_batching: _Optional[_Union[DynamicBatching, _Mapping]] = ..., version_labels: _Optional[_Mapping[str, int]] = ..., traffic: _Optional[_Iterable[_Union[TrafficWeight, _Mapping]]] = ..., shadow: _Optional[_Union[ShadowPolicy, _Mapping]] = ..., warmup: _Optional[_Iterable[_Union[ModelWarmup, _Mapping]]] = ..., streaming: _Optional[_Union[Streaming, _Mapping]] = ..., instance_count: _Optional[int] = ..., parameters: _Optional[_Mapping[str, str]] = ..., execution: _Optional[str] = ..., drift: _Optional[_Union[DriftPolicy, _Mapping]] = ..., feedback: _Optional[_Union[FeedbackPolicy, _Mapping]] = ...) -> None: ...

class FeedbackPolicy(_message.Message):
    __slots__ = ("output", "kind", "max_records", "ttl_seconds")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    output: str
    kind: str
    max_records: int
    ttl_seconds: int
    def __init__(self, output: _Optional[str] = ..., kind: _Optional[str] = ..., max_records: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class DriftPolicy(_message.Message):
    __slots__ = ("reference_requests", "psi_threshold", "window_rows", "sample_fraction", "max_features")
    REFERENCE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PSI_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_FEATURES_FIELD_NUMBER: _ClassVar[int]
    reference_requests: int
    psi_threshold: float
    window_rows: int
    sample_fraction: float
    max_features: int
    def __init__(self, reference_requests: _Optional[int] = ..., psi_threshold: _Optional[float] = ..., window_rows: _Optional[int] = ..., sample_fraction: _Optional[float] = ..., max_features: _Optional[int] = ...) -> None: ...
