"""Meta-World v3 behind one small interface: make a task by name and seed, reset, step, render, success.

Rendering is headless on the CPU (EGL through Mesa's llvmpipe by default; set MUJOCO_GL=osmesa to use
OSMesa instead) with a MuJoCo renderer sized to the image, shadows and reflections off, and
anti-aliasing by supersampling (render at 2x, average down with OpenCV's area filter): about 8 ms a
frame at 96 px on these machines, against 14 ms with MuJoCo's 4x multisampling and about 120 ms for
Meta-World's default renderer.

Example:

    with MetaWorldSim("drawer-open", image_size=96) as sim:
        step = sim.reset(seed=1000)
        frame = sim.render()                      # (96, 96, 3) uint8 RGB
        step = sim.step(np.array([0, 1, 0, -1]))  # delta xyz, gripper, each in [-1, 1]
        step.success
"""

from __future__ import annotations

import atexit
import warnings
import weakref
from dataclasses import dataclass

import cv2
import numpy as np

from distill.tasks import instruction_for, resolve_task
from runtime.policy import Observation

METAWORLD_CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")


@dataclass(frozen=True)
class AimedCamera:
    """A camera of our own: mounted where a Meta-World camera is, aimed at `lookat` with a narrower lens.

    At 96 px Meta-World's corner4 gives about 3 px per 5 cm on the workspace: a 2 cm goal marker is a
    pixel or two. `workspace` sits on corner4's mount but looks at the middle of the region where objects,
    goals and the hand move (x -0.15..0.15, y 0.45..0.95, z 0..0.35 m stay in frame) with a 36 degree field
    of view: about 5.3 px per 5 cm. On a real robot this is a choice of mount and lens, nothing more.
    """

    mount: str | tuple[float, float, float]  # a Meta-World camera whose position it takes, or a world point (m)
    lookat: tuple[float, float, float]  # world point at the image centre, metres
    fovy_deg: float  # vertical field of view


AIMED_CAMERAS = {
    "workspace": AimedCamera(mount="corner4", lookat=(0.0, 0.72, 0.12), fovy_deg=36.0),
    # From the robot's right, 65 cm up: the arm (on the left) is behind the objects, never in front of them.
    # Its image axes are nearly independent of workspace's (in workspace world x and y both move a point
    # sideways), so the pair fixes a floating goal in 3-D, which one fixed camera cannot.
    "side": AimedCamera(mount=(0.7, 0.55, 0.65), lookat=(0.0, 0.72, 0.12), fovy_deg=42.0),
}
CAMERAS = METAWORLD_CAMERAS + tuple(AIMED_CAMERAS)
DEFAULT_CAMERA = "corner4"
# Two views tiled left to right: the fixed corner camera for the scene, the gripper camera for the last
# centimetres (reach and pick-place goals float in the air: one fixed camera cannot see their depth).
WRIST_RIG = "corner4+gripperPOV"
DEFAULT_IMAGE_SIZE = 96
# Meta-World's own hard limit on steps per episode (its env raises past it).
METAWORLD_MAX_PATH_LENGTH = 500
STATE_NAMES = ("hand_x", "hand_y", "hand_z", "gripper_opening")
SIM_OBS_DIM = 39

def camera_views(spec: str) -> tuple[str, ...]:
    """The cameras of a rig spec, left to right: 'corner4' -> ('corner4',); 'corner4+gripperPOV' -> both.

    A rig's frame tiles its views side by side: (size, size * views, 3).
    """
    views = tuple(str(spec).split("+"))
    unknown = [v for v in views if v not in CAMERAS]
    if unknown or not views:
        raise ValueError(f"unknown camera '{spec}': use one of {', '.join(CAMERAS)}, or several joined by '+' "
                         f"(for example {WRIST_RIG})")
    if len(set(views)) != len(views):
        raise ValueError(f"camera rig '{spec}' names a camera twice")
    return views


_open_sims: "weakref.WeakSet[MetaWorldSim]" = weakref.WeakSet()
_atexit_registered = False


def _close_open_sims() -> None:
    # Free GL contexts before MuJoCo's own exit hook tears the EGL display down; registered after
    # that hook (atexit runs last-registered first), otherwise finalizers fail noisily at exit.
    for sim in list(_open_sims):
        sim.close()


def _track(sim: "MetaWorldSim") -> None:
    global _atexit_registered
    _open_sims.add(sim)
    if not _atexit_registered:
        atexit.register(_close_open_sims)
        _atexit_registered = True


@dataclass
class SimStep:
    """What the simulator reports after a reset or a step."""

    sim_obs: np.ndarray  # (39,) float64: Meta-World's full observation (hand, objects, goal)
    state: np.ndarray  # (4,) float32 proprioception: hand xyz (m), gripper opening
    success: bool
    reward: float = 0.0
    truncated: bool = False


class MetaWorldSim:
    """One Meta-World v3 task with seeded resets and a fast headless renderer.

    Object and goal positions are drawn anew at every reset from that reset's seed, so an episode is
    reproduced exactly by its (task, seed) pair.
    """

    def __init__(
        self,
        task: str,
        image_size: int = DEFAULT_IMAGE_SIZE,
        camera: str = DEFAULT_CAMERA,
        supersample: int = 2,
    ) -> None:
        self.task = resolve_task(task)
        self.instruction = instruction_for(self.task)
        self.views = camera_views(camera)
        if not 16 <= int(image_size) <= 1024:
            raise ValueError(f"image size {image_size} is out of range: use 16 to 1024 pixels (64-128 is typical)")
        self.image_size = int(image_size)
        self.camera = camera

        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{self.task}-goal-observable"]()
        # Re-draw object and goal positions at every reset from the env's seeded generator.
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True

        self._mujoco = mujoco
        if not 1 <= int(supersample) <= 4:
            raise ValueError(f"supersample {supersample} is out of range: use 1 (none) to 4")
        self.supersample = int(supersample)
        self._env.model.vis.quality.offsamples = 0
        render_size = self.image_size * self.supersample
        self._renderer = mujoco.Renderer(self._env.model, render_size, render_size)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._last: SimStep | None = None
        self.steps = 0
        self.seed: int | None = None
        _track(self)

    # -- episode -------------------------------------------------------------------------------
    def reset(self, seed: int) -> SimStep:
        """Start an episode whose object and goal positions are drawn from `seed`."""
        self.seed = int(seed)
        self._env.seed(self.seed)
        sim_obs, _ = self._env.reset()
        # Meta-World moves the goal marker in the model but leaves the rendered positions of the last
        # episode: recompute positions (no integration) so the first frame shows this episode's goal.
        self._mujoco.mj_forward(self._env.model, self._env.data)
        self.steps = 0
        self._last = SimStep(sim_obs=sim_obs, state=self._state(sim_obs), success=False)
        return self._last

    def step(self, action: np.ndarray) -> SimStep:
        """Apply one action: (4,) delta xyz and gripper in [-1, 1] (values outside are clipped)."""
        if self._last is None:
            raise RuntimeError("call reset(seed) before step()")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (4,):
            raise ValueError(f"Meta-World actions are 4-D (dx, dy, dz, gripper), got shape {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"non-finite action {action}: refusing to send it to the simulator")
        if self.steps >= METAWORLD_MAX_PATH_LENGTH:
            raise RuntimeError(f"episode is over after {METAWORLD_MAX_PATH_LENGTH} steps: call reset(seed)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sim_obs, reward, _, truncated, info = self._env.step(np.clip(action, -1.0, 1.0))
        self.steps += 1
        self._last = SimStep(
            sim_obs=sim_obs,
            state=self._state(sim_obs),
            success=bool(info["success"]),
            reward=float(reward),
            truncated=bool(truncated),
        )
        return self._last

    def render(self) -> np.ndarray:
        """(H, H * views, 3) uint8 RGB frame from the configured camera(s), top row first, views side by side."""
        views = [self._render_view(name) for name in self.views]
        return views[0] if len(views) == 1 else np.concatenate(views, axis=1)

    def _render_view(self, camera: str) -> np.ndarray:
        """(H, H, 3) uint8 RGB frame from one camera."""
        if camera in AIMED_CAMERAS:
            frame = self._render_aimed(AIMED_CAMERAS[camera])
        else:
            self._renderer.update_scene(self._env.data, camera=camera)
            # Meta-World's cameras are mounted upside down relative to MuJoCo's image convention.
            frame = self._renderer.render()[::-1, ::-1]
        if self.supersample > 1:
            size = (self.image_size, self.image_size)
            return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame)

    def _render_aimed(self, aimed: AimedCamera) -> np.ndarray:
        """A free MuJoCo camera at `aimed.mount`'s position looking at `aimed.lookat` (no roll: z is up)."""
        mujoco, model, data = self._mujoco, self._env.model, self._env.data
        if isinstance(aimed.mount, str):
            mount = data.cam_xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, aimed.mount)]
        else:
            mount = np.asarray(aimed.mount, dtype=np.float64)
        lookat = np.asarray(aimed.lookat, dtype=np.float64)
        view = lookat - mount  # (3,) from the mount to the point looked at
        camera = mujoco.MjvCamera()
        camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        camera.lookat[:] = lookat
        camera.distance = float(np.linalg.norm(view))
        camera.azimuth = float(np.degrees(np.arctan2(view[1], view[0])))
        camera.elevation = float(np.degrees(np.arcsin(view[2] / camera.distance)))
        fovy = float(model.vis.global_.fovy)  # free cameras take the model's global field of view
        model.vis.global_.fovy = aimed.fovy_deg
        try:
            self._renderer.update_scene(data, camera=camera)
        finally:
            model.vis.global_.fovy = fovy
        return self._renderer.render()

    def observation(self) -> Observation:
        """The current frame, instruction and state as a policy `Observation`."""
        if self._last is None:
            raise RuntimeError("call reset(seed) before observation()")
        return Observation(
            image=self.render(),
            instruction=self.instruction,
            state=self._last.state,
            sim_state=self._last.sim_obs,
        )

    @staticmethod
    def _state(sim_obs: np.ndarray) -> np.ndarray:
        return np.asarray(sim_obs[:4], dtype=np.float32)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        renderer, self._renderer = getattr(self, "_renderer", None), None
        if renderer is not None:
            renderer.close()
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()

    def __enter__(self) -> "MetaWorldSim":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
