import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]

class TemplateView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEMPLATE_VIEW_UNSPECIFIED: _ClassVar[TemplateView]
    TEMPLATE_VIEW_BASIC: _ClassVar[TemplateView]
    TEMPLATE_VIEW_FULL: _ClassVar[TemplateView]

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_SQDIFF: _ClassVar[Method]
    METHOD_SQDIFF_NORMED: _ClassVar[Method]
    METHOD_CCORR: _ClassVar[Method]
    METHOD_CCORR_NORMED: _ClassVar[Method]
    METHOD_CCOEFF: _ClassVar[Method]
    METHOD_CCOEFF_NORMED: _ClassVar[Method]
    METHOD_SSIM: _ClassVar[Method]

class Padding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PADDING_UNSPECIFIED: _ClassVar[Padding]
    PADDING_VALID: _ClassVar[Padding]
    PADDING_SAME: _ClassVar[Padding]
    PADDING_FULL: _ClassVar[Padding]

class Border(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BORDER_UNSPECIFIED: _ClassVar[Border]
    BORDER_CONSTANT: _ClassVar[Border]
    BORDER_REFLECT: _ClassVar[Border]
    BORDER_REPLICATE: _ClassVar[Border]

class MapEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAP_ENCODING_UNSPECIFIED: _ClassVar[MapEncoding]
    MAP_ENCODING_FLOAT32: _ClassVar[MapEncoding]
    MAP_ENCODING_FLOAT16: _ClassVar[MapEncoding]
    MAP_ENCODING_UINT8: _ClassVar[MapEncoding]
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_UINT8: DataType
DATA_TYPE_FLOAT32: DataType
TEMPLATE_VIEW_UNSPECIFIED: TemplateView
TEMPLATE_VIEW_BASIC: TemplateView
TEMPLATE_VIEW_FULL: TemplateView
METHOD_UNSPECIFIED: Method
METHOD_SQDIFF: Method
METHOD_SQDIFF_NORMED: Method
METHOD_CCORR: Method
METHOD_CCORR_NORMED: Method
METHOD_CCOEFF: Method
METHOD_CCOEFF_NORMED: Method
METHOD_SSIM: Method
PADDING_UNSPECIFIED: Padding
PADDING_VALID: Padding
PADDING_SAME: Padding
PADDING_FULL: Padding
BORDER_UNSPECIFIED: Border
BORDER_CONSTANT: Border
BORDER_REFLECT: Border
BORDER_REPLICATE: Border
MAP_ENCODING_UNSPECIFIED: MapEncoding
MAP_ENCODING_FLOAT32: MapEncoding
MAP_ENCODING_FLOAT16: MapEncoding
MAP_ENCODING_UINT8: MapEncoding

class RawImage(_message.Message):
    __slots__ = ("height", "width", "channels", "dtype", "data")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    channels: int
    dtype: DataType
    data: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., dtype: _Optional[_Union[DataType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("raw", "encoded")
    RAW_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    raw: RawImage
    encoded: bytes
    def __init__(self, raw: _Optional[_Union[RawImage, _Mapping]] = ..., encoded: _Optional[bytes] = ...) -> None: ...

class Template(_message.Message):
    __slots__ = ("name", "display_name", "labels", "image", "mask", "height", "width", "channels", "create_time", "etag", "scales", "angles", "angle_range", "scale_range", "texture_threshold")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    ANGLES_FIELD_NUMBER: _ClassVar[int]
    ANGLE_RANGE_FIELD_NUMBER: _ClassVar[int]
    SCALE_RANGE_FIELD_NUMBER: _ClassVar[int]
    TEXTURE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    labels: _containers.ScalarMap[str, str]
    image: Image
    mask: Image
    height: int
    width: int
    channels: int
    create_time: _timestamp_pb2.Timestamp
    etag: str
    scales: _containers.RepeatedScalarFieldContainer[float]
    angles: _containers.RepeatedScalarFieldContainer[float]
    angle_range: Range
    scale_range: Range
    texture_threshold: float
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., mask: _Optional[_Union[Image, _Mapping]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., scales: _Optional[_Iterable[float]] = ..., angles: _Optional[_Iterable[float]] = ..., angle_range: _Optional[_Union[Range, _Mapping]] = ..., scale_range: _Optional[_Union[Range, _Mapping]] = ..., texture_threshold: _Optional[float] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class CreateTemplateRequest(_message.Message):
    __slots__ = ("template", "template_id", "request_id")
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    template: Template
    template_id: str
    request_id: str
    def __init__(self, template: _Optional[_Union[Template, _Mapping]] = ..., template_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateTemplateResponse(_message.Message):
    __slots__ = ("template",)
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    template: Template
    def __init__(self, template: _Optional[_Union[Template, _Mapping]] = ...) -> None: ...

class GetTemplateRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetTemplateResponse(_message.Message):
    __slots__ = ("template",)
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    template: Template
    def __init__(self, template: _Optional[_Union[Template, _Mapping]] = ...) -> None: ...

class ListTemplatesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "view")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    view: TemplateView
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., view: _Optional[_Union[TemplateView, str]] = ...) -> None: ...

class ListTemplatesResponse(_message.Message):
    __slots__ = ("templates", "next_page_token")
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[Template]
    next_page_token: str
    def __init__(self, templates: _Optional[_Iterable[_Union[Template, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteTemplateRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteTemplateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeakOptions(_message.Message):
    __slots__ = ("top_k", "threshold", "min_distance", "subpixel", "min_visible", "max_overlap", "candidates", "template_thresholds")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SUBPIXEL_FIELD_NUMBER: _ClassVar[int]
    MIN_VISIBLE_FIELD_NUMBER: _ClassVar[int]
    MAX_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    threshold: float
    min_distance: int
    subpixel: bool
    min_visible: float
    max_overlap: float
    candidates: int
    template_thresholds: bool
    def __init__(self, top_k: _Optional[int] = ..., threshold: _Optional[float] = ..., min_distance: _Optional[int] = ..., subpixel: _Optional[bool] = ..., min_visible: _Optional[float] = ..., max_overlap: _Optional[float] = ..., candidates: _Optional[int] = ..., template_thresholds: _Optional[bool] = ...) -> None: ...

class MapOptions(_message.Message):
    __slots__ = ("encoding",)
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    encoding: MapEncoding
    def __init__(self, encoding: _Optional[_Union[MapEncoding, str]] = ...) -> None: ...

class MatchConfig(_message.Message):
    __slots__ = ("templates", "method", "padding", "border", "border_value", "stride", "peaks", "maps", "realtime", "data_range")
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    BORDER_FIELD_NUMBER: _ClassVar[int]
    BORDER_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    PEAKS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    REALTIME_FIELD_NUMBER: _ClassVar[int]
    DATA_RANGE_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedScalarFieldContainer[str]
    method: Method
    padding: Padding
    border: Border
    border_value: float
    stride: int
    peaks: PeakOptions
    maps: MapOptions
    realtime: bool
    data_range: float
    def __init__(self, templates: _Optional[_Iterable[str]] = ..., method: _Optional[_Union[Method, str]] = ..., padding: _Optional[_Union[Padding, str]] = ..., border: _Optional[_Union[Border, str]] = ..., border_value: _Optional[float] = ..., stride: _Optional[int] = ..., peaks: _Optional[_Union[PeakOptions, _Mapping]] = ..., maps: _Optional[_Union[MapOptions, _Mapping]] = ..., realtime: _Optional[bool] = ..., data_range: _Optional[float] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("sequence", "capture_time", "image")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    capture_time: _timestamp_pb2.Timestamp
    image: Image
    def __init__(self, sequence: _Optional[int] = ..., capture_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class MatchRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: MatchConfig
    frame: Frame
    def __init__(self, config: _Optional[_Union[MatchConfig, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class StreamMatchRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: MatchConfig
    frame: Frame
    def __init__(self, config: _Optional[_Union[MatchConfig, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class Peak(_message.Message):
    __slots__ = ("template", "x", "y", "width", "height", "score", "scale", "angle", "cx", "cy", "visible", "ambiguity")
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ANGLE_FIELD_NUMBER: _ClassVar[int]
    CX_FIELD_NUMBER: _ClassVar[int]
    CY_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_FIELD_NUMBER: _ClassVar[int]
    AMBIGUITY_FIELD_NUMBER: _ClassVar[int]
    template: str
    x: float
    y: float
    width: int
    height: int
    score: float
    scale: float
    angle: float
    cx: float
    cy: float
    visible: float
    ambiguity: float
    def __init__(self, template: _Optional[str] = ..., x: _Optional[float] = ..., y: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., score: _Optional[float] = ..., scale: _Optional[float] = ..., angle: _Optional[float] = ..., cx: _Optional[float] = ..., cy: _Optional[float] = ..., visible: _Optional[float] = ..., ambiguity: _Optional[float] = ...) -> None: ...

class FeatureMap(_message.Message):
    __slots__ = ("template", "height", "width", "encoding", "data", "scale", "offset", "origin_x", "origin_y", "stride", "angle", "template_scale", "window_width", "window_height")
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_X_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_Y_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    ANGLE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_SCALE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_WIDTH_FIELD_NUMBER: _ClassVar[int]
    WINDOW_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    template: str
    height: int
    width: int
    encoding: MapEncoding
    data: bytes
    scale: float
    offset: float
    origin_x: int
    origin_y: int
    stride: int
    angle: float
    template_scale: float
    window_width: int
    window_height: int
    def __init__(self, template: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., encoding: _Optional[_Union[MapEncoding, str]] = ..., data: _Optional[bytes] = ..., scale: _Optional[float] = ..., offset: _Optional[float] = ..., origin_x: _Optional[int] = ..., origin_y: _Optional[int] = ..., stride: _Optional[int] = ..., angle: _Optional[float] = ..., template_scale: _Optional[float] = ..., window_width: _Optional[int] = ..., window_height: _Optional[int] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("decode_ms", "compute_ms", "encode_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    compute_ms: float
    encode_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("sequence", "capture_time", "peaks", "maps", "timing", "skipped_sequences")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_FIELD_NUMBER: _ClassVar[int]
    PEAKS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    capture_time: _timestamp_pb2.Timestamp
    peaks: _containers.RepeatedCompositeFieldContainer[Peak]
    maps: _containers.RepeatedCompositeFieldContainer[FeatureMap]
    timing: Timing
    skipped_sequences: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sequence: _Optional[int] = ..., capture_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., peaks: _Optional[_Iterable[_Union[Peak, _Mapping]]] = ..., maps: _Optional[_Iterable[_Union[FeatureMap, _Mapping]]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., skipped_sequences: _Optional[_Iterable[int]] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: FrameResult
    def __init__(self, result: _Optional[_Union[FrameResult, _Mapping]] = ...) -> None: ...

class StreamMatchResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: FrameResult
    def __init__(self, result: _Optional[_Union[FrameResult, _Mapping]] = ...) -> None: ...
