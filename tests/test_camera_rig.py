"""Camera rigs: several simulator cameras tiled side by side into one frame, and a VLA that runs each view
through its vision tower alone (a fixed scene camera plus a gripper camera)."""

import shutil

import numpy as np
import pytest

from conftest import needs_sim, run_module
from distill.sim import WRIST_RIG, camera_views


def test_rig_specs_parse_and_bad_ones_say_how_to_fix_them():
    assert camera_views("corner4") == ("corner4",)
    assert camera_views(WRIST_RIG) == ("corner4", "gripperPOV")
    for bad in ("ceiling", "corner4+", "corner4+ceiling", ""):
        with pytest.raises(ValueError, match="unknown camera .* joined by '\\+'"):
            camera_views(bad)
    with pytest.raises(ValueError, match="twice"):
        camera_views("corner4+corner4")


@needs_sim
def test_rig_frame_tiles_each_camera_left_to_right():
    from distill.sim import MetaWorldSim

    frames = {}
    for camera in ("corner4", "gripperPOV", WRIST_RIG):
        with MetaWorldSim("reach", image_size=32, camera=camera) as sim:
            sim.reset(7)
            sim.step(np.array([0.5, 0.0, 0.0, 0.0]))
            frames[camera] = sim.render()
    rig = frames[WRIST_RIG]
    assert rig.shape == (32, 64, 3)
    np.testing.assert_array_equal(rig[:, :32], frames["corner4"])
    np.testing.assert_array_equal(rig[:, 32:], frames["gripperPOV"])
    assert np.abs(frames["corner4"].astype(int) - frames["gripperPOV"].astype(int)).mean() > 5  # two real views


@needs_sim
def test_workspace_camera_magnifies_the_objects_and_leaves_the_model_fov_alone():
    import mujoco

    from distill.sim import MetaWorldSim

    with MetaWorldSim("pick-place", image_size=96, camera="corner4+workspace", supersample=1) as sim:
        sim.reset(3)
        model = sim._env.model
        fovy = float(model.vis.global_.fovy)
        puck = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "obj")
        puck_geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] == puck]
        sim._renderer.enable_segmentation_rendering()  # (H, W, 2): geom id per pixel
        try:
            pixels = {view: int(np.isin(sim._render_view(view)[..., 0], puck_geoms).sum())
                      for view in ("corner4", "workspace")}
        finally:
            sim._renderer.disable_segmentation_rendering()
        assert model.vis.global_.fovy == fovy  # the narrower lens is set only while rendering
        frame = sim.render()
    assert frame.shape == (96, 192, 3)
    assert pixels["corner4"] > 0
    assert pixels["workspace"] >= 2.5 * pixels["corner4"]  # about (5.3 / 2.9) ** 2 from the geometry


def _goal_pixel(sim, view: str, goal_site: int) -> list[float]:
    """(u, v) centre of the goal marker in one view, from a segmentation render."""
    import mujoco

    seg = sim._render_view(view)  # (H, W, 2): object id, object type
    rows, cols = np.nonzero((seg[..., 0] == goal_site) & (seg[..., 1] == int(mujoco.mjtObj.mjOBJ_SITE)))
    assert len(rows), f"the goal marker is not in the {view} view"
    return [cols.mean(), rows.mean()]


@needs_sim
def test_workspace_and_side_cameras_together_fix_a_floating_goal_in_3d():
    import mujoco

    from distill.sim import MetaWorldSim

    pixels, goals = [], []  # (N, 4) goal centre in both views; (N, 3) goal position, metres
    with MetaWorldSim("reach", image_size=96, camera="workspace+side", supersample=1) as sim:
        goal_site = mujoco.mj_name2id(sim._env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
        sim._renderer.enable_segmentation_rendering()
        try:
            for seed in range(100, 116):
                goals.append(sim.reset(seed).sim_obs[-3:])
                pixels.append(_goal_pixel(sim, "workspace", goal_site) + _goal_pixel(sim, "side", goal_site))
        finally:
            sim._renderer.disable_segmentation_rendering()
    pixels, goals = np.asarray(pixels), np.asarray(goals)

    def worst_fit_error(columns: list[int]) -> float:
        """Largest error (m) of the best affine map from these pixel coordinates to the goal position."""
        design = np.c_[pixels[:, columns], np.ones(len(pixels))]
        coef, *_ = np.linalg.lstsq(design, goals, rcond=None)
        return float(np.abs(design @ coef - goals).max())

    # One view gives two numbers for three unknowns; the pair pins the goal to about a centimetre.
    assert worst_fit_error([0, 1]) > 0.03 and worst_fit_error([2, 3]) > 0.03
    assert worst_fit_error([0, 1, 2, 3]) < 0.015


@needs_sim
def test_the_first_frame_of_an_episode_shows_that_episodes_goal():
    import mujoco

    from distill.sim import MetaWorldSim

    with MetaWorldSim("reach", image_size=64, camera="workspace") as sim, \
            MetaWorldSim("reach", image_size=64, camera="workspace") as fresh:
        goal_site = mujoco.mj_name2id(sim._env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
        sim.reset(7)
        step = sim.reset(8)  # the marker must not stay where seed 7 put it
        np.testing.assert_allclose(sim._env.data.site_xpos[goal_site], step.sim_obs[-3:], atol=1e-9)
        fresh.reset(8)
        np.testing.assert_array_equal(sim.render(), fresh.render())


def _tiny_config(views: int):
    from dataclasses import replace

    from distill.model import SMOKE_SIZES, VlaConfig

    sizes = replace(SMOKE_SIZES, views=views)
    return VlaConfig.from_sizes(sizes, vocab_size=300, action_ids=list(range(40, 296)), pad_id=0, bos_id=1, eos_id=2)


def test_each_view_runs_through_the_vision_tower_alone():
    torch = pytest.importorskip("torch")
    from distill.model import VlaModel

    torch.manual_seed(0)
    model = VlaModel(_tiny_config(views=2)).eval()
    with torch.no_grad():
        model.view_embedding.normal_()
        pixels = torch.randn(3, 3, 32, 64)  # (B, 3, H, 2H): two views side by side
        tokens = model.embed_image(pixels)  # (B, 2N, D)
        n = model.image_tokens // 2
        assert tokens.shape == (3, 2 * n, model.config.text_config.hidden_size)
        for view in range(2):
            alone = model.projector(model.vision_tower(pixel_values=pixels[..., view * 32:(view + 1) * 32])
                                    .last_hidden_state) + model.view_embedding[view]
            torch.testing.assert_close(tokens[:, view * n:(view + 1) * n], alone)
    with pytest.raises(ValueError, match="views must be 1 to 4"):
        _tiny_config(views=5)


def test_warm_start_grows_a_rig_by_appended_views(tmp_path):
    torch = pytest.importorskip("torch")
    from distill.model import VlaModel
    from distill.train_teacher import warm_start
    from runtime.errors import UserError

    torch.manual_seed(0)
    source = VlaModel(_tiny_config(views=2))
    with torch.no_grad():
        source.view_embedding.normal_()
    source.save_pretrained(tmp_path / "two")
    grown = VlaModel(_tiny_config(views=3))
    warm_start(grown, tmp_path / "two")
    torch.testing.assert_close(grown.view_embedding[:2], source.view_embedding)
    assert torch.count_nonzero(grown.view_embedding[2]) == 0  # the new camera starts with no offset
    torch.testing.assert_close(grown.projector.state_dict(), source.projector.state_dict())
    with pytest.raises(UserError, match="other sizes.*view_embedding"):
        warm_start(VlaModel(_tiny_config(views=1)), tmp_path / "two")  # views are never dropped


def test_fit_frame_resizes_but_never_invents_a_view():
    from runtime.camera import fit_frame

    frame = np.zeros((64, 128, 3), np.uint8)
    assert fit_frame(frame, 32, 64, views=2).shape == (32, 64, 3)
    with pytest.raises(ValueError, match="does not hold the 2 square view.*camera corner4\\+gripperPOV"):
        fit_frame(np.zeros((32, 32, 3), np.uint8), 32, 64, views=2, camera=WRIST_RIG)
    with pytest.raises(ValueError, match="RGB frame"):
        fit_frame(np.zeros((32, 64), np.uint8), 32, 64, views=2)


@needs_sim
def test_warm_start_copies_a_one_view_model_into_a_rig_model(trained_smoke_model, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from distill.model import VlaModel
    from distill.train_teacher import warm_start
    from runtime.errors import UserError

    source = load_file(str(trained_smoke_model / "model.safetensors"))
    config = VlaModel.config_class.from_pretrained(trained_smoke_model)
    config.views = 2
    model = VlaModel(config)
    warm_start(model, trained_smoke_model)
    state = model.state_dict()
    for name, value in source.items():
        torch.testing.assert_close(state[name], value)
    assert torch.count_nonzero(state["view_embedding"]) == 0  # the one-view model's tokens, unchanged at first

    # A rig model answers evaluate with a clear error when the camera gives another number of views.
    folder = tmp_path / "rig"
    shutil.copytree(trained_smoke_model, folder, ignore=shutil.ignore_patterns("checkpoint"))
    model.config.camera = WRIST_RIG
    model.save_pretrained(folder)
    proc = run_module("distill", "evaluate", "--policy", str(folder), "--tasks", "reach", "--seeds", "1",
                      "--camera", "corner4", "--out", str(tmp_path / "eval.json"), "--no-progress")
    assert proc.returncode == 2 and f"pass --camera {WRIST_RIG}" in proc.stderr, proc.stderr
    assert not (tmp_path / "eval.json").exists()

    wider = VlaModel.config_class.from_pretrained(trained_smoke_model)
    wider.text_config.hidden_size *= 2
    with pytest.raises(UserError, match="model of other sizes"):
        warm_start(VlaModel(wider), trained_smoke_model)
    with pytest.raises(UserError, match="no model.safetensors"):
        warm_start(model, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(UserError, match="corrupt"):
        warm_start(model, tmp_path)
