"""Camera sources for the control loop: an OpenCV device index, a video file, a GStreamer pipeline
(CSI cameras on a Jetson), or the simulator. Every source returns RGB uint8 frames, top row first, and
the runtime's preprocessing (runtime/onnx_engine.py) then resizes them exactly as in training.

    camera = open_camera("0")                     # /dev/video0
    camera = open_camera("run.mp4")               # a recording
    camera = open_camera("nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! "
                         "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink")
    frame = camera.read()                         # (H, W, 3) uint8 RGB
    rig = open_rig(["0", "2"], view_size=96)      # a bundle with image.views = 2: scene camera, wrist camera
    frame = rig.read()                            # (96, 192, 3): the views side by side, in that order
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


class FrameShapeError(UserError, ValueError):
    """A frame that the model cannot take: not (H, W, 3) uint8 RGB, or another number of tiled views."""


def fit_frame(frame: np.ndarray, height: int, width: int, views: int = 1, camera: str | None = None) -> np.ndarray:
    """An (h, w, 3) uint8 RGB frame resized to the model's (height, width).

    A one-view model takes any camera's frame (resized, as in training). A rig's frame must hold exactly
    `views` square views side by side: resizing anything else would smear one camera across two views.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise FrameShapeError(f"camera frame must be an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
    if frame.shape[:2] == (height, width):
        return frame
    if views > 1 and frame.shape[1] * height != frame.shape[0] * width:
        raise FrameShapeError(f"frame of shape {frame.shape[:2]} does not hold the {views} square view(s) the model "
                              f"takes ({height}x{width}" + (f", camera {camera})" if camera else ")"))
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


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


class TiledCamera:
    """Several cameras read in turn, each view resized to a square, tiled left to right (a camera rig)."""

    def __init__(self, cameras: list, view_size: int) -> None:
        self.cameras = list(cameras)
        self.view_size = int(view_size)

    def read(self) -> np.ndarray:
        size = (self.view_size, self.view_size)
        views = [cv2.resize(camera.read(), size, interpolation=cv2.INTER_AREA) for camera in self.cameras]
        return np.concatenate(views, axis=1)  # (S, S * views, 3)

    def close(self) -> None:
        for camera in self.cameras:
            camera.close()


def open_camera(source: str, width: int | None = None, height: int | None = None) -> OpenCVCamera:
    """A camera from a command-line string: '0', 'video.mp4', or a GStreamer pipeline."""
    return OpenCVCamera(str(source), width, height)


def open_rig(sources: list[str], views: int = 1, view_size: int = 96, rig: str | None = None):
    """The camera(s) a bundle needs: one source per view of its image, in the manifest's order."""
    if len(sources) != views:
        named = f" ({rig})" if rig else ""
        raise CameraError(f"this bundle takes {views} camera view(s){named} and {len(sources)} --camera were given: "
                          f"pass --camera once per view, in that order")
    if views == 1:
        return open_camera(sources[0])
    opened: list[OpenCVCamera] = []
    try:
        for source in sources:
            opened.append(open_camera(source))
    except CameraError:
        for camera in opened:
            camera.close()
        raise
    return TiledCamera(opened, view_size)
