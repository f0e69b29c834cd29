from ba3c.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLIENT_ROLE_UNSPECIFIED: _ClassVar[ClientRole]
    LEARNER: _ClassVar[ClientRole]
    EVALUATOR: _ClassVar[ClientRole]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    ASYNC: _ClassVar[Mode]
    SYNC: _ClassVar[Mode]

class PushOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUSH_OUTCOME_UNSPECIFIED: _ClassVar[PushOutcome]
    APPLIED: _ClassVar[PushOutcome]
    DROPPED_STALE: _ClassVar[PushOutcome]
    DROPPED_SURPLUS: _ClassVar[PushOutcome]
CLIENT_ROLE_UNSPECIFIED: ClientRole
LEARNER: ClientRole
EVALUATOR: ClientRole
MODE_UNSPECIFIED: Mode
ASYNC: Mode
SYNC: Mode
PUSH_OUTCOME_UNSPECIFIED: PushOutcome
APPLIED: PushOutcome
DROPPED_STALE: PushOutcome
DROPPED_SURPLUS: PushOutcome

class RegisterRequest(_message.Message):
    __slots__ = ("client_id", "role")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    role: ClientRole
    def __init__(self, client_id: _Optional[str] = ..., role: _Optional[_Union[ClientRole, str]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("shard_index", "mode", "replicas_to_aggregate", "version", "initialized", "variables", "lease_seconds")
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_TO_AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INITIALIZED_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    shard_index: int
    mode: Mode
    replicas_to_aggregate: int
    version: int
    initialized: bool
    variables: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.VariableSpec]
    lease_seconds: float
    def __init__(self, shard_index: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ..., replicas_to_aggregate: _Optional[int] = ..., version: _Optional[int] = ..., initialized: _Optional[bool] = ..., variables: _Optional[_Iterable[_Union[_tensor_pb2.VariableSpec, _Mapping]]] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class InitializeRequest(_message.Message):
    __slots__ = ("client_id", "parameters")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    parameters: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    def __init__(self, client_id: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ...) -> None: ...

class InitializeResponse(_message.Message):
    __slots__ = ("applied", "message", "version")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    message: str
    version: int
    def __init__(self, applied: _Optional[bool] = ..., message: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class PushPullRequest(_message.Message):
    __slots__ = ("client_id", "version", "gradients", "env_frames", "samples", "session", "sequence", "parameters_dtype")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    ENV_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_DTYPE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    version: int
    gradients: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    env_frames: int
    samples: int
    session: str
    sequence: int
    parameters_dtype: _tensor_pb2.DType
    def __init__(self, client_id: _Optional[str] = ..., version: _Optional[int] = ..., gradients: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ..., env_frames: _Optional[int] = ..., samples: _Optional[int] = ..., session: _Optional[str] = ..., sequence: _Optional[int] = ..., parameters_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ...) -> None: ...

class PushPullResponse(_message.Message):
    __slots__ = ("outcome", "version", "parameters", "staleness", "env_frames", "repeated")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    STALENESS_FIELD_NUMBER: _ClassVar[int]
    ENV_FRAMES_FIELD_NUMBER: _ClassVar[int]
    REPEATED_FIELD_NUMBER: _ClassVar[int]
    outcome: PushOutcome
    version: int
    parameters: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    staleness: int
    env_frames: int
    repeated: bool
    def __init__(self, outcome: _Optional[_Union[PushOutcome, str]] = ..., version: _Optional[int] = ..., parameters: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ..., staleness: _Optional[int] = ..., env_frames: _Optional[int] = ..., repeated: _Optional[bool] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("client_id", "have_version", "parameters_dtype")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_DTYPE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    have_version: int
    parameters_dtype: _tensor_pb2.DType
    def __init__(self, client_id: _Optional[str] = ..., have_version: _Optional[int] = ..., parameters_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ...) -> None: ...

class PullResponse(_message.Message):
    __slots__ = ("version", "unchanged", "parameters", "env_frames")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ENV_FRAMES_FIELD_NUMBER: _ClassVar[int]
    version: int
    unchanged: bool
    parameters: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    env_frames: int
    def __init__(self, version: _Optional[int] = ..., unchanged: _Optional[bool] = ..., parameters: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ..., env_frames: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("shard_index", "mode", "initialized", "version", "env_frames", "pushes_applied", "pushes_dropped", "live_learners", "checkpoint_version", "num_variables", "num_parameters", "pushes_repeated")
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    INITIALIZED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENV_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PUSHES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    PUSHES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    LIVE_LEARNERS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PUSHES_REPEATED_FIELD_NUMBER: _ClassVar[int]
    shard_index: int
    mode: Mode
    initialized: bool
    version: int
    env_frames: int
    pushes_applied: int
    pushes_dropped: int
    live_learners: int
    checkpoint_version: int
    num_variables: int
    num_parameters: int
    pushes_repeated: int
    def __init__(self, shard_index: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ..., initialized: _Optional[bool] = ..., version: _Optional[int] = ..., env_frames: _Optional[int] = ..., pushes_applied: _Optional[int] = ..., pushes_dropped: _Optional[int] = ..., live_learners: _Optional[int] = ..., checkpoint_version: _Optional[int] = ..., num_variables: _Optional[int] = ..., num_parameters: _Optional[int] = ..., pushes_repeated: _Optional[int] = ...) -> None: ...
