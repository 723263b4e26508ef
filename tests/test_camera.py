"""Camera sources: a real video file through OpenCV, colour order, grey frames, and cameras that fail."""

import cv2
import numpy as np
import pytest

from runtime.camera import CameraError, open_camera, to_rgb


@pytest.fixture()
def video(tmp_path):
    """A 5-frame MJPG video whose frames are pure red (as written in OpenCV's BGR order)."""
    path = tmp_path / "red.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    red_bgr = np.zeros((48, 64, 3), np.uint8)
    red_bgr[:, :, 2] = 255
    for _ in range(5):
        writer.write(red_bgr)
    writer.release()
    return path


def test_video_file_frames_come_out_rgb(video):
    camera = open_camera(str(video))
    frame = camera.read()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    assert frame[..., 0].mean() > 200 and frame[..., 2].mean() < 50  # red is channel 0 in RGB
    for _ in range(4):
        camera.read()
    with pytest.raises(CameraError, match="no frame"):
        camera.read()  # end of the file
    camera.close()


def test_grey_and_bgra_frames_are_converted():
    grey = np.full((10, 12), 77, np.uint8)
    assert to_rgb(grey, "test").shape == (10, 12, 3)
    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., 0] = 255  # blue
    assert to_rgb(bgra, "test")[..., 2].mean() == 255
    with pytest.raises(CameraError, match="8-bit"):
        to_rgb(np.zeros((4, 4, 3), np.float32), "test")
    with pytest.raises(CameraError, match="no frame"):
        to_rgb(None, "test")


def test_cameras_that_cannot_be_opened(tmp_path):
    with pytest.raises(CameraError, match="neither a device index"):
        open_camera(str(tmp_path / "missing.mp4"))
    with pytest.raises(CameraError, match="cannot open camera 37"):
        open_camera("37")  # no /dev/video37
