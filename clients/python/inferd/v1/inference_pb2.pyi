from inferd.v1 import model_config_pb2 as _model_config_pb2
from inferd.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VersionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERSION_STATE_UNSPECIFIED: _ClassVar[VersionState]
    VERSION_STATE_LOADING: _ClassVar[VersionState]
    VERSION_STATE_WARMING: _ClassVar[VersionState]
    VERSION_STATE_READY: _ClassVar[VersionState]
    VERSION_STATE_DRAINING: _ClassVar[VersionState]
    VERSION_STATE_UNLOADED: _ClassVar[VersionState]
    VERSION_STATE_FAILED: _ClassVar[VersionState]
VERSION_STATE_UNSPECIFIED: VersionState
VERSION_STATE_LOADING: VersionState
VERSION_STATE_WARMING: VersionState
VERSION_STATE_READY: VersionState
VERSION_STATE_DRAINING: VersionState
VERSION_STATE_UNLOADED: VersionState
VERSION_STATE_FAILED: VersionState

class PredictRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "version_label", "inputs", "requested_outputs", "id", "parameters", "output_encoding", "routing_key")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Parameter, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    version_label: str
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    requested_outputs: _containers.RepeatedScalarFieldContainer[str]
    id: str
    parameters: _containers.MessageMap[str, _tensor_pb2.Parameter]
    output_encoding: _tensor_pb2.TensorEncoding
    routing_key: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., version_label: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., requested_outputs: _Optional[_Iterable[str]] = ..., id: _Optional[str] = ..., parameters: _Optional[_Mapping[str, _tensor_pb2.Parameter]] = ..., output_encoding: _Optional[_Union[_tensor_pb2.TensorEncoding, str]] = ..., routing_key: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "outputs", "id", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Parameter, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    id: str
    parameters: _containers.MessageMap[str, _tensor_pb2.Parameter]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., id: _Optional[str] = ..., parameters: _Optional[_Mapping[str, _tensor_pb2.Parameter]] = ...) -> None: ...

class PredictStreamRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "version_label", "inputs", "requested_outputs", "id", "parameters", "output_encoding", "routing_key", "chunk_rows")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Parameter, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ROWS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    version_label: str
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    requested_outputs: _containers.RepeatedScalarFieldContainer[str]
    id: str
    parameters: _containers.MessageMap[str, _tensor_pb2.Parameter]
    output_encoding: _tensor_pb2.TensorEncoding
    routing_key: str
    chunk_rows: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., version_label: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., requested_outputs: _Optional[_Iterable[str]] = ..., id: _Optional[str] = ..., parameters: _Optional[_Mapping[str, _tensor_pb2.Parameter]] = ..., output_encoding: _Optional[_Union[_tensor_pb2.TensorEncoding, str]] = ..., routing_key: _Optional[str] = ..., chunk_rows: _Optional[int] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "outputs", "id", "sequence_index", "final", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Parameter, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    id: str
    sequence_index: int
    final: bool
    parameters: _containers.MessageMap[str, _tensor_pb2.Parameter]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., id: _Optional[str] = ..., sequence_index: _Optional[int] = ..., final: _Optional[bool] = ..., parameters: _Optional[_Mapping[str, _tensor_pb2.Parameter]] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "state", "reason", "engine", "labels", "engine_notes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_NOTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: VersionState
    reason: str
    engine: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    engine_notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[int] = ..., state: _Optional[_Union[VersionState, str]] = ..., reason: _Optional[str] = ..., engine: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., engine_notes: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "versions", "reason", "traffic", "shadow")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    reason: str
    traffic: _containers.RepeatedCompositeFieldContainer[_model_config_pb2.TrafficWeight]
    shadow: _model_config_pb2.ShadowPolicy
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., reason: _Optional[str] = ..., traffic: _Optional[_Iterable[_Union[_model_config_pb2.TrafficWeight, _Mapping]]] = ..., shadow: _Optional[_Union[_model_config_pb2.ShadowPolicy, _Mapping]] = ...) -> None: ...

class ModelMetadataRequest(_message.Message):
    __slots__ = ("name", "version", "version_label")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    version_label: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., version_label: _Optional[str] = ...) -> None: ...

class TensorMetadata(_message.Message):
    __slots__ = ("name", "data_type", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    data_type: _tensor_pb2.DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., data_type: _Optional[_Union[_tensor_pb2.DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelMetadataResponse(_message.Message):
    __slots__ = ("name", "version", "versions", "engine", "max_batch_size", "inputs", "outputs", "streaming_only", "config")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    STREAMING_ONLY_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    engine: str
    max_batch_size: int
    inputs: _containers.RepeatedCompositeFieldContainer[TensorMetadata]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorMetadata]
    streaming_only: bool
    config: _model_config_pb2.ModelConfig
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., engine: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[TensorMetadata, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorMetadata, _Mapping]]] = ..., streaming_only: _Optional[bool] = ..., config: _Optional[_Union[_model_config_pb2.ModelConfig, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class ServerMetadataRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerMetadataResponse(_message.Message):
    __slots__ = ("name", "version", "engines", "extensions", "uptime_seconds", "devices")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    engines: _containers.RepeatedScalarFieldContainer[str]
    extensions: _containers.RepeatedScalarFieldContainer[str]
    uptime_seconds: float
    devices: _containers.RepeatedCompositeFieldContainer[DeviceMemory]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., engines: _Optional[_Iterable[str]] = ..., extensions: _Optional[_Iterable[str]] = ..., uptime_seconds: _Optional[float] = ..., devices: _Optional[_Iterable[_Union[DeviceMemory, _Mapping]]] = ...) -> None: ...

class DeviceMemory(_message.Message):
    __slots__ = ("index", "name", "compute_capability", "total_bytes", "free_bytes", "used_bytes", "memory_fraction")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    compute_capability: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    memory_fraction: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., compute_capability: _Optional[str] = ..., total_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., memory_fraction: _Optional[float] = ...) -> None: ...

class ModelStatisticsRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class BatchSizeCount(_message.Message):
    __slots__ = ("batch_size", "count")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    count: int
    def __init__(self, batch_size: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class VersionStatistics(_message.Message):
    __slots__ = ("name", "version", "success_count", "failure_count", "inference_count", "execution_count", "batch_sizes", "queue_time_ns", "compute_time_ns", "expired_before_run", "cancelled_before_run", "queue_depth", "shadow", "warmup_count", "streaming", "engine", "latency_buckets", "drift", "feedback")
    class FailureCountEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_BEFORE_RUN_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_BEFORE_RUN_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    WARMUP_COUNT_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    success_count: int
    failure_count: _containers.ScalarMap[str, int]
    inference_count: int
    execution_count: int
    batch_sizes: _containers.RepeatedCompositeFieldContainer[BatchSizeCount]
    queue_time_ns: int
    compute_time_ns: int
    expired_before_run: int
    cancelled_before_run: int
    queue_depth: int
    shadow: _containers.RepeatedCompositeFieldContainer[ShadowComparison]
    warmup_count: int
    streaming: StreamStatistics
    engine: str
    latency_buckets: _containers.RepeatedCompositeFieldContainer[LatencyBucket]
    drift: DriftStatistics
    feedback: FeedbackStatistics
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., success_count: _Optional[int] = ..., failure_count: _Optional[_Mapping[str, int]] = ..., inference_count: _Optional[int] = ..., execution_count: _Optional[int] = ..., batch_sizes: _Optional[_Iterable[_Union[BatchSizeCount, _Mapping]]] = ..., queue_time_ns: _Optional[int] = ..., compute_time_ns: _Optional[int] = ..., expired_before_run: _Optional[int] = ..., cancelled_before_run: _Optional[int] = ..., queue_depth: _Optional[int] = ..., shadow: _Optional[_Iterable[_Union[ShadowComparison, _Mapping]]] = ..., warmup_count: _Optional[int] = ..., streaming: _Optional[_Union[StreamStatistics, _Mapping]] = ..., engine: _Optional[str] = ..., latency_buckets: _Optional[_Iterable[_Union[LatencyBucket, _Mapping]]] = ..., drift: _Optional[_Union[DriftStatistics, _Mapping]] = ..., feedback: _Optional[_Union[FeedbackStatistics, _Mapping]] = ...) -> None: ...

class FeedbackStatistics(_message.Message):
    __slots__ = ("kind", "scored", "correct", "log_loss_sum", "abs_error_sum", "squared_error_sum", "squared_error_sq_sum")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    LOG_LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    ABS_ERROR_SUM_FIELD_NUMBER: _ClassVar[int]
    SQUARED_ERROR_SUM_FIELD_NUMBER: _ClassVar[int]
    SQUARED_ERROR_SQ_SUM_FIELD_NUMBER: _ClassVar[int]
    kind: str
    scored: int
    correct: int
    log_loss_sum: float
    abs_error_sum: float
    squared_error_sum: float
    squared_error_sq_sum: float
    def __init__(self, kind: _Optional[str] = ..., scored: _Optional[int] = ..., correct: _Optional[int] = ..., log_loss_sum: _Optional[float] = ..., abs_error_sum: _Optional[float] = ..., squared_error_sum: _Optional[float] = ..., squared_error_sq_sum: _Optional[float] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("model_name", "request_id", "target")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    request_id: str
    target: _tensor_pb2.Tensor
    def __init__(self, model_name: _Optional[str] = ..., request_id: _Optional[str] = ..., target: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("outcome", "scored_versions", "message")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[FeedbackResponse.Outcome]
        OUTCOME_SCORED: _ClassVar[FeedbackResponse.Outcome]
        OUTCOME_UNKNOWN_ID: _ClassVar[FeedbackResponse.Outcome]
        OUTCOME_EXPIRED: _ClassVar[FeedbackResponse.Outcome]
    OUTCOME_UNSPECIFIED: FeedbackResponse.Outcome
    OUTCOME_SCORED: FeedbackResponse.Outcome
    OUTCOME_UNKNOWN_ID: FeedbackResponse.Outcome
    OUTCOME_EXPIRED: FeedbackResponse.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SCORED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    outcome: FeedbackResponse.Outcome
    scored_versions: _containers.RepeatedScalarFieldContainer[int]
    message: str
    def __init__(self, outcome: _Optional[_Union[FeedbackResponse.Outcome, str]] = ..., scored_versions: _Optional[_Iterable[int]] = ..., message: _Optional[str] = ...) -> None: ...

class DriftStatistics(_message.Message):
    __slots__ = ("drifting", "reference", "window_rows", "features")
    DRIFTING_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    drifting: bool
    reference: str
    window_rows: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    def __init__(self, drifting: _Optional[bool] = ..., reference: _Optional[str] = ..., window_rows: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("tensor", "column", "psi", "threshold", "drifting")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DRIFTING_FIELD_NUMBER: _ClassVar[int]
    tensor: str
    column: int
    psi: float
    threshold: float
    drifting: bool
    def __init__(self, tensor: _Optional[str] = ..., column: _Optional[int] = ..., psi: _Optional[float] = ..., threshold: _Optional[float] = ..., drifting: _Optional[bool] = ...) -> None: ...

class LatencyBucket(_message.Message):
    __slots__ = ("le_microseconds", "count")
    LE_MICROSECONDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    le_microseconds: float
    count: int
    def __init__(self, le_microseconds: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class StreamStatistics(_message.Message):
    __slots__ = ("active_streams", "waiting_streams", "paused_streams", "streams_started", "streams_completed", "streams_cancelled", "streams_expired", "streams_rejected", "streams_failed", "steps", "step_streams", "prompt_tokens", "generated_tokens", "caches_freed", "cache_bytes", "buffered_outputs", "max_buffered_outputs")
    ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    WAITING_STREAMS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_STREAMS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_STARTED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FAILED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_STREAMS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHES_FREED_FIELD_NUMBER: _ClassVar[int]
    CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BUFFERED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    active_streams: int
    waiting_streams: int
    paused_streams: int
    streams_started: int
    streams_completed: int
    streams_cancelled: int
    streams_expired: int
    streams_rejected: int
    streams_failed: int
    steps: int
    step_streams: int
    prompt_tokens: int
    generated_tokens: int
    caches_freed: int
    cache_bytes: int
    buffered_outputs: int
    max_buffered_outputs: int
    def __init__(self, active_streams: _Optional[int] = ..., waiting_streams: _Optional[int] = ..., paused_streams: _Optional[int] = ..., streams_started: _Optional[int] = ..., streams_completed: _Optional[int] = ..., streams_cancelled: _Optional[int] = ..., streams_expired: _Optional[int] = ..., streams_rejected: _Optional[int] = ..., streams_failed: _Optional[int] = ..., steps: _Optional[int] = ..., step_streams: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., caches_freed: _Optional[int] = ..., cache_bytes: _Optional[int] = ..., buffered_outputs: _Optional[int] = ..., max_buffered_outputs: _Optional[int] = ...) -> None: ...

class ShadowComparison(_message.Message):
    __slots__ = ("primary_version", "output", "compared", "max_abs_diff", "mean_abs_diff", "argmax_agree_rows", "rows", "errors", "dropped")
    PRIMARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    ARGMAX_AGREE_ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    primary_version: int
    output: str
    compared: int
    max_abs_diff: float
    mean_abs_diff: float
    argmax_agree_rows: int
    rows: int
    errors: int
    dropped: int
    def __init__(self, primary_version: _Optional[int] = ..., output: _Optional[str] = ..., compared: _Optional[int] = ..., max_abs_diff: _Optional[float] = ..., mean_abs_diff: _Optional[float] = ..., argmax_agree_rows: _Optional[int] = ..., rows: _Optional[int] = ..., errors: _Optional[int] = ..., dropped: _Optional[int] = ...) -> None: ...

class ModelStatisticsResponse(_message.Message):
    __slots__ = ("statistics",)
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    statistics: _containers.RepeatedCompositeFieldContainer[VersionStatistics]
    def __init__(self, statistics: _Optional[_Iterable[_Union[VersionStatistics, _Mapping]]] = ...) -> None: ...
