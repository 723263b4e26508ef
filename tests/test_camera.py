"""Camera sources: a real video file through OpenCV, colour order, grey frames, and cameras that fail."""

import cv2
import numpy as np
import pytest

from runtime.camera import CameraError, open_camera, open_rig, to_rgb


def write_video(path, channel: int):
    """A 5-frame 64x48 MJPG video of one pure colour: BGR channel `channel` at 255."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    colour_bgr = np.zeros((48, 64, 3), np.uint8)
    colour_bgr[:, :, channel] = 255
    for _ in range(5):
        writer.write(colour_bgr)
    writer.release()
    return path


@pytest.fixture()
def video(tmp_path):
    """A 5-frame MJPG video whose frames are pure red (as written in OpenCV's BGR order)."""
    return write_video(tmp_path / "red.avi", channel=2)


def test_a_rig_tiles_one_square_view_per_camera_in_order(video, tmp_path):
    blue = write_video(tmp_path / "blue.avi", channel=0)
    rig = open_rig([str(video), str(blue)], views=2, view_size=32)
    frame = rig.read()
    assert frame.shape == (32, 64, 3)
    assert frame[:, :32, 0].mean() > 200 and frame[:, :32, 2].mean() < 50  # scene camera: red, on the left
    assert frame[:, 32:, 2].mean() > 200 and frame[:, 32:, 0].mean() < 50  # second camera: blue, on the right
    rig.close()
    with pytest.raises(CameraError, match="takes 2 camera view.*corner4\\+gripperPOV.*1 --camera"):
        open_rig([str(video)], views=2, view_size=32, rig="corner4+gripperPOV")
    with pytest.raises(CameraError, match="neither a device index"):
        open_rig([str(video), str(tmp_path / "missing.mp4")], views=2)


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
