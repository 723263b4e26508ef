"""Camera sources for the control loop: an OpenCV device index, a video file, a GStreamer pipeline
(CSI cameras on a Jetson), or the simulator. Every source returns RGB uint8 frames, top row first, and
the runtime's preprocessing (runtime/onnx_engine.py) then resizes them exactly as in training.

    camera = open_camera("0")                     # /dev/video0
    camera = open_camera("run.mp4")               # a recording
    camera = open_camera("nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! "
                         "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink")
    frame = camera.read()                         # (H, W, 3) uint8 RGB
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from runtime.errors import UserError


class CameraError(UserError):
    """A camera that cannot be opened or stops delivering frames."""


class Camera(Protocol):
    def read(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""

    def close(self) -> None:
        """Release the device."""


def to_rgb(frame: np.ndarray, source: str) -> np.ndarray:
    """OpenCV's BGR (or grey, or BGRA) frame as RGB uint8; anything else is a CameraError."""
    if frame is None or not isinstance(frame, np.ndarray) or frame.size == 0:
        raise CameraError(f"camera {source} returned no frame: check the cable, the device index or the pipeline")
    if frame.dtype != np.uint8:
        raise CameraError(f"camera {source} gives {frame.dtype} frames; vla-edge needs 8-bit colour")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    raise CameraError(f"camera {source} gives frames of shape {frame.shape}; expected (H, W, 3) colour")


class OpenCVCamera:
    """cv2.VideoCapture over a device index, a file or a GStreamer pipeline."""

    def __init__(self, source: str, width: int | None = None, height: int | None = None) -> None:
        self.source = source
        if source.isdigit():
            capture = cv2.VideoCapture(int(source))
        elif "!" in source:
            capture = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
        else:
            if not Path(source).exists():
                raise CameraError(f"camera source {source} is neither a device index, an existing video file nor a "
                                  f"GStreamer pipeline (a string with '!')")
            capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"cannot open camera {source}: check that it is connected and not in use "
                              f"(`v4l2-ctl --list-devices`), or that OpenCV was built with GStreamer for pipelines")
        if width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self.capture = capture

    def read(self) -> np.ndarray:
        ok, frame = self.capture.read()
        if not ok:
            raise CameraError(f"camera {self.source} delivered no frame (end of file, or the device stopped)")
        return to_rgb(frame, self.source)

    def close(self) -> None:
        self.capture.release()


class SimCamera:
    """The simulator's camera: frames from a MetaWorldSim (workstation side only)."""

    def __init__(self, sim) -> None:
        self.sim = sim

    def read(self) -> np.ndarray:
        return self.sim.render()

    def close(self) -> None:
        """The simulator owns its renderer."""


def open_camera(source: str, width: int | None = None, height: int | None = None) -> OpenCVCamera:
    """A camera from a command-line string: '0', 'video.mp4', or a GStreamer pipeline."""
    return OpenCVCamera(str(source), width, height)
