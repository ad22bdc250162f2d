"""Condition encoders and relative camera motion."""

import numpy as np
import pytest
import torch

from aapt_world.conditions import (
    ActionConditionEncoder,
    CameraConditionEncoder,
    ConditionConfig,
    PoseConditionEncoder,
    build_condition_encoder,
    relative_camera_motion,
    wrap_degrees,
)


def test_forward_motion_at_yaw_90_is_pure_forward():
    # Facing yaw 90 deg (+y in Doom), moving +y by 3: forward 3, right 0.
    poses = np.array([[0.0, 0.0, 0.0, 90.0, 0.0], [0.0, 3.0, 0.0, 90.0, 0.0]])
    m = relative_camera_motion(poses)
    np.testing.assert_allclose(m[0], 0.0)
    np.testing.assert_allclose(m[1], [3.0, 0.0, 0.0, 0.0, 0.0], atol=1e-12)


def test_strafe_right_and_vertical_motion():
    # Facing yaw 0 (+x): right is -y. Moving -y by 2 and up by 1.
    poses = np.array([[5.0, 5.0, 0.0, 0.0, 0.0], [5.0, 3.0, 1.0, 0.0, 0.0]])
    np.testing.assert_allclose(relative_camera_motion(poses)[1], [0, 2, 1, 0, 0], atol=1e-12)


def test_motion_is_in_previous_frame_axes():
    # Turning while moving: the displacement is measured in the PREVIOUS frame's axes.
    poses = np.array([[0.0, 0.0, 0.0, 180.0, 0.0], [-1.0, 0.0, 0.0, 90.0, 0.0]])
    np.testing.assert_allclose(relative_camera_motion(poses)[1], [1, 0, 0, -90, 0], atol=1e-12)


def test_yaw_wraparound():
    poses = np.array([[0, 0, 0, 179.0, 0], [0, 0, 0, -179.0, 0], [0, 0, 0, 179.0, 0]])
    m = relative_camera_motion(poses)
    np.testing.assert_allclose(m[:, 3], [0.0, 2.0, -2.0], atol=1e-9)
    assert wrap_degrees(np.array(180.0)) == 180.0
    assert wrap_degrees(np.array(-180.0)) == 180.0
    assert wrap_degrees(np.array(540.0)) == 180.0


def test_torch_and_numpy_agree_with_batch_dims():
    rng = np.random.default_rng(0)
    poses = rng.normal(size=(2, 3, 6, 5)) * [10, 10, 1, 200, 20]
    m_np = relative_camera_motion(poses)
    m_t = relative_camera_motion(torch.from_numpy(poses))
    assert isinstance(m_t, torch.Tensor) and m_np.shape == (2, 3, 6, 5)
    np.testing.assert_allclose(m_t.numpy(), m_np, atol=1e-9)
    assert np.all(m_np[..., 3] > -180) and np.all(m_np[..., 3] <= 180)


def test_camera_encoder_shapes_and_scale():
    enc = CameraConditionEncoder(cond_dim=32)
    x = torch.randn(2, 5, 4, 5)
    assert enc(x).shape == (2, 5, 32)
    scale = torch.tensor([2.0, 2.0, 1.0, 10.0, 5.0])
    reference = enc(x)
    enc.set_scale(scale)
    torch.testing.assert_close(enc(x * scale), reference)
    assert "scale" in enc.state_dict()
    with pytest.raises(ValueError):
        enc(torch.randn(2, 5, 3, 5))
    with pytest.raises(ValueError):
        enc.set_scale([1.0, 0.0, 1.0, 1.0, 1.0])


def test_pose_and_action_encoders():
    pose = PoseConditionEncoder(cond_dim=16, num_keypoints=17, keypoint_dim=3)
    assert pose(torch.randn(3, 2, 4, 17, 3)).shape == (3, 2, 16)
    disc = ActionConditionEncoder(cond_dim=16, num_actions=8)
    assert disc(torch.randint(0, 8, (3, 2, 4))).shape == (3, 2, 16)
    cont = ActionConditionEncoder(cond_dim=16, action_dim=6)
    assert cont(torch.randn(3, 2, 4, 6)).shape == (3, 2, 16)
    with pytest.raises(ValueError):
        ActionConditionEncoder(cond_dim=16)


def test_factory():
    assert isinstance(build_condition_encoder(ConditionConfig("camera", cond_dim=8)),
                      CameraConditionEncoder)
    enc = build_condition_encoder(ConditionConfig("pose", cond_dim=8, num_keypoints=5))
    assert enc(torch.randn(1, 2, 4, 5, 2)).shape == (1, 2, 8)
    enc = build_condition_encoder(ConditionConfig("action", cond_dim=8, num_actions=4))
    assert enc(torch.zeros(1, 2, 4, dtype=torch.long)).shape == (1, 2, 8)
    with pytest.raises(ValueError):
        build_condition_encoder(ConditionConfig("smell"))


def test_pose_heatmaps_peak_where_the_joint_is():
    from aapt_world.conditions import PoseConditionEncoder

    enc = PoseConditionEncoder(cond_dim=8, num_keypoints=2)
    with torch.no_grad():  # pixel keypoints on a 64 x 48 frame -> [-1, 1]
        enc.offset.copy_(torch.tensor([32.0, 24.0]))
        enc.scale.copy_(torch.tensor([32.0, 24.0]))
    kp = torch.zeros(1, 1, 4, 2, 2)
    kp[..., 0, :] = torch.tensor([4.0, 4.0])  # top-left latent pixel (8 px per latent pixel)
    kp[..., 1, :] = torch.tensor([60.0, 44.0])  # bottom-right one
    maps = enc.heatmaps(kp, height=6, width=8, sigma=0.5)
    assert maps.shape == (1, 8, 1, 6, 8)  # 4 frames x 2 joints
    first, second = maps[0, 0, 0], maps[0, 1, 0]
    assert first[0, 0] == pytest.approx(1.0, abs=1e-4) and first.argmax() == 0
    assert second[5, 7] == pytest.approx(1.0, abs=1e-4) and second.argmax() == 6 * 8 - 1
    assert first[3, 4] < 1e-6  # local, not a global code
