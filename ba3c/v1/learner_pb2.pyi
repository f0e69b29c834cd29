from ba3c.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PoolSpec(_message.Message):
    __slots__ = ("env_id", "num_envs", "observation_shape", "observation_dtype", "num_actions", "frame_stack")
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_DTYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    FRAME_STACK_FIELD_NUMBER: _ClassVar[int]
    env_id: str
    num_envs: int
    observation_shape: _containers.RepeatedScalarFieldContainer[int]
    observation_dtype: _tensor_pb2.DType
    num_actions: int
    frame_stack: int
    def __init__(self, env_id: _Optional[str] = ..., num_envs: _Optional[int] = ..., observation_shape: _Optional[_Iterable[int]] = ..., observation_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., num_actions: _Optional[int] = ..., frame_stack: _Optional[int] = ...) -> None: ...

class EpisodeStats(_message.Message):
    __slots__ = ("env_index", "episode_return", "length", "frames")
    ENV_INDEX_FIELD_NUMBER: _ClassVar[int]
    EPISODE_RETURN_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    env_index: int
    episode_return: float
    length: int
    frames: int
    def __init__(self, env_index: _Optional[int] = ..., episode_return: _Optional[float] = ..., length: _Optional[int] = ..., frames: _Optional[int] = ...) -> None: ...

class ActRequest(_message.Message):
    __slots__ = ("spec", "pool_id", "observations", "rewards", "dones", "finished_episodes", "env_frames")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    DONES_FIELD_NUMBER: _ClassVar[int]
    FINISHED_EPISODES_FIELD_NUMBER: _ClassVar[int]
    ENV_FRAMES_FIELD_NUMBER: _ClassVar[int]
    spec: PoolSpec
    pool_id: str
    observations: _tensor_pb2.Tensor
    rewards: _containers.RepeatedScalarFieldContainer[float]
    dones: _containers.RepeatedScalarFieldContainer[bool]
    finished_episodes: _containers.RepeatedCompositeFieldContainer[EpisodeStats]
    env_frames: int
    def __init__(self, spec: _Optional[_Union[PoolSpec, _Mapping]] = ..., pool_id: _Optional[str] = ..., observations: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., rewards: _Optional[_Iterable[float]] = ..., dones: _Optional[_Iterable[bool]] = ..., finished_episodes: _Optional[_Iterable[_Union[EpisodeStats, _Mapping]]] = ..., env_frames: _Optional[int] = ...) -> None: ...

class ActResponse(_message.Message):
    __slots__ = ("actions", "version")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedScalarFieldContainer[int]
    version: int
    def __init__(self, actions: _Optional[_Iterable[int]] = ..., version: _Optional[int] = ...) -> None: ...
