"""The cloud path: wire format, policy server, robot-side client, netem proxy and the closed loop over
them; real servers on loopback, real ONNX Runtime sessions on the smoke bundle."""

import json
import socket
import threading
import time

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import HAVE_SIM, run_module
from runtime import wire
from runtime.cloud_client import ClientConfig, CloudPolicy, CloudRequestError, fetch_health
from runtime.errors import UserError
from runtime.net_profiles import PROFILES, NetProfile, get_profile
from runtime.netem_proxy import LinkShaper, ProxyThread, sample_quantiles
from runtime.policy import Action, Observation
from runtime.policy_server import PolicyServer, ServerConfig

NAMES = ["dx", "dy", "dz", "gripper", "terminate"]
INFO = {"model": {"name": "counting", "sha256": "0" * 64}, "instructions": ["open the drawer"],
        "action": {"names": NAMES, "units": [""] * 5, "low": [-1] * 5, "high": [1] * 5},
        "image": {"height": 32, "width": 32, "channel_order": "RGB"}}
FRAME = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)


class CountingPolicy:
    """Action k (from 1) is [k, 0, 0, 0.5, 0]; call k first sleeps delays[k - 1] seconds."""

    def __init__(self, delays=()):
        self.delays, self.calls, self.resets = list(delays), 0, 0

    def reset(self):
        self.resets += 1
        self.calls = 0

    def act(self, observation):
        self.calls += 1
        if self.calls <= len(self.delays):
            time.sleep(self.delays[self.calls - 1])
        return Action(values=np.array([self.calls, 0, 0, 0.5, 0], np.float32), timings={"decode": 0.0})


def counting_server(delays=(), **config):
    """A server whose first session sleeps `delays`; later sessions answer at once."""
    first = iter([CountingPolicy(delays)])
    return PolicyServer(lambda: next(first, None) or CountingPolicy(), INFO, ServerConfig(port=0, **config)).start()


def wait_idle(server, timeout_s=10.0):
    """Until every connection's handler has ended; the final connection count."""
    deadline = time.monotonic() + timeout_s
    while fetch_health(server.url)["connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return fetch_health(server.url)["connections"]


def request(seq=1, instruction="open the drawer", image=None, **extra):
    frame = wire.encode_array(FRAME if image is None else image)
    return wire.pack({"type": "act", "seq": seq, "instruction": instruction, "image": frame, **extra})


def exchange(url, *blobs):
    """Send raw messages on a fresh connection; the hello and the replies, decoded."""
    with connect(url, compression=None, max_size=None) as ws:
        hello = msgpack.unpackb(ws.recv(timeout=10))
        replies = []
        for blob in blobs:
            ws.send(blob)
            replies.append(msgpack.unpackb(ws.recv(timeout=10)))
        return hello, replies


def delayed(rtt_ms, port, **knobs):
    return ProxyThread("127.0.0.1", port, NetProfile("test", rtt_ms=rtt_ms, **knobs))


# -- wire format ----------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(sorted(wire.DTYPES)), shape=st.lists(st.integers(0, 4), max_size=3))
def test_arrays_round_trip_bit_exact(dtype, shape):
    array = (np.arange(int(np.prod(shape)), dtype=np.float64) * 1.7).astype(np.dtype(dtype)).reshape(shape)
    back = wire.decode_array(msgpack.unpackb(wire.pack({"a": wire.encode_array(array)}))["a"], "a")
    assert back.dtype == array.dtype and back.shape == array.shape and back.tobytes() == array.tobytes()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_message_or_a_wire_error(data):
    try:
        message = wire.unpack(data)
    except wire.WireError as err:
        assert err.code in wire.REQUEST_ERRORS
    else:
        assert isinstance(message["type"], str)


def test_object_big_endian_and_inconsistent_arrays_are_refused():
    with pytest.raises(wire.WireError, match="dtype"):
        wire.encode_array(np.array([object()], dtype=object))
    assert wire.decode_array(wire.encode_array(np.arange(3, dtype=">f4")), "x").tolist() == [0, 1, 2]
    for bad in ({"dtype": "|O", "shape": [1], "data": b"\0" * 8}, {"dtype": "<f4", "shape": [3], "data": b"\0" * 8},
                {"dtype": "<f4", "shape": [-1], "data": b""}, {"dtype": "<f4", "shape": [1], "data": "text"}):
        with pytest.raises(wire.WireError):
            wire.decode_array(bad, "x")


def test_jpeg_frames_are_size_checked_before_decoding():
    frame = wire.encode_frame(FRAME, jpeg_quality=90)
    assert wire.jpeg_size(frame["data"]) == (32, 32)
    assert np.abs(wire.decode_frame(frame).astype(int) - FRAME).mean() < 40  # lossy but the same picture
    huge = bytearray(frame["data"])
    sof = huge.index(b"\xff\xc0")
    huge[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2  # claims 60000 x 60000 pixels
    with pytest.raises(wire.WireError, match="60000x60000"):
        wire.decode_frame({"format": "jpeg", "data": bytes(huge)})


# -- server robustness ------------------------------------------------------------------------------
def test_bad_requests_get_error_replies_and_the_connection_keeps_serving():
    with counting_server() as server:
        bad = [
            b"\xc1\x00garbage",  # not msgpack
            "a text message",
            wire.pack([1, 2, 3]),  # msgpack, not a map
            wire.pack({"type": "dance", "seq": 2}),
            request(3, instruction="make coffee"),
            request(4, image=FRAME.astype(np.float32)),  # wrong dtype
            request(5, image=FRAME[:, :, :2]),  # wrong shape
            wire.pack({"type": "act", "seq": 6, "instruction": "open the drawer",
                       "image": {"dtype": "|O", "shape": [32, 32, 3], "data": b"\0" * 3072}}),  # object dtype
            request(7, state={"dtype": "<f4", "shape": [3], "data": b"\0" * 4}),  # bytes do not fit the shape
            request(8),  # and good ones on the same connection
            wire.pack({"type": "health", "seq": 9}),
        ]
        hello, replies = exchange(server.url, *bad)
        assert hello["type"] == "hello" and hello["protocol"] == wire.PROTOCOL_VERSION
        assert hello["instructions"] == ["open the drawer"] and hello["action"]["names"] == NAMES
        codes = [r.get("code") for r in replies]
        assert codes == ["malformed", "malformed", "malformed", "unknown_type", "unknown_instruction",
                         "bad_request", "bad_request", "bad_request", "bad_request", None, None]
        assert [r["seq"] for r in replies[3:]] == [2, 3, 4, 5, 6, 7, 8, 9]
        assert all(r["message"] for r in replies[:-2])
        assert replies[-1]["type"] == "health" and replies[-1]["ok"] and replies[-1]["connections"] == 1
        good = replies[-2]
        assert good["type"] == "action" and wire.decode_array(good["values"], "v").tolist() == [1, 0, 0, 0.5, 0]
        assert {"decode", "queue", "inference", "total"} <= set(good["timings"])
        health = fetch_health(server.url)
        assert health["ok"] and health["requests"] == 11 and health["errors"] == 9


def test_oversized_message_closes_only_that_connection():
    with counting_server(max_message_bytes=16 << 10) as server:
        with connect(server.url, compression=None, max_size=None) as ws:
            ws.recv(timeout=10)
            ws.send(request(1, image=np.zeros((100, 100, 3), np.uint8)))  # 30 kB > 16 kB
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1009  # message too big
        assert exchange(server.url, request(2))[1][0]["type"] == "action"  # others are served
        with CloudPolicy(ClientConfig(server.url, timeout_s=5)) as client:  # the client checks before sending
            big = Observation(np.zeros((100, 100, 3), np.uint8), "open the drawer")
            with pytest.raises(CloudRequestError, match="jpeg"):
                client.act(big)
            assert client.stats["requests"] == 0
            jpeg = CloudPolicy(ClientConfig(server.url, timeout_s=5, jpeg_quality=80))
            assert jpeg.act(big).source == "cloud" and 0 < jpeg.stats["bytes_last"] < 16 << 10
            jpeg.close()


def test_client_vanishing_mid_request_and_50_robots_at_once():
    with counting_server(delays=(0.3,)) as server:
        with connect(server.url, compression=None) as ws:
            ws.recv(timeout=10)
            ws.send(request(1))  # the policy is busy for 0.3 s with it ...
            ws.socket.shutdown(socket.SHUT_RDWR)  # ... when the robot vanishes without a close frame

        results, errors = {}, []

        def robot(k):
            try:
                blob = request(k) if k % 5 else request(k, instruction="fly")
                results[k] = exchange(server.url, blob)[1][0]
            except Exception as err:  # recorded, asserted below
                errors.append(repr(err))

        threads = [threading.Thread(target=robot, args=(k,)) for k in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors and len(results) == 50
        assert all(r["seq"] == k for k, r in results.items())
        assert all(r["type"] == ("action" if k % 5 else "error") for k, r in results.items())
        assert all(wire.decode_array(r["values"], "v")[0] == 1 for k, r in results.items() if k % 5)  # own session
        assert wait_idle(server) == 0  # every session ended, none leaked


def test_connections_beyond_the_limit_are_told_to_come_back_later():
    with counting_server(max_connections=1) as server:
        with connect(server.url, compression=None) as first:
            first.recv(timeout=10)
            with connect(server.url, compression=None) as second:
                with pytest.raises(ConnectionClosed) as closed:
                    second.recv(timeout=10)
            assert closed.value.rcvd.code == 1013
        assert wait_idle(server) == 0
        assert exchange(server.url, request(1))[1][0]["type"] == "action"


# -- client: timeouts, fallbacks, late replies ---------------------------------------------------------
def test_a_late_reply_is_discarded_never_applied_to_the_next_step():
    with counting_server(delays=(0.6,)) as server:
        with CloudPolicy(ClientConfig(server.url, timeout_s=0.2)) as client:
            observation = Observation(FRAME, "open the drawer")
            first = client.act(observation)  # the server takes 0.6 s over it
            assert first.source == "hold" and first.reason == "late"
            client.config.timeout_s = 5.0
            second = client.act(observation)  # reply 1 arrives while this step waits: it must be skipped
            assert second.source == "cloud" and second.values[0] == 2 and second.seq == first.seq + 1
            assert client.stats["stale"] == 1 and client.stats["late"] == 1 and client.stats["cloud"] == 1
            assert client.hold_values().tolist() == [0, 0, 0, 0.5, 0]  # a hold keeps the gripper


def test_reset_reaches_the_robots_own_session_in_order():
    with counting_server() as server, CloudPolicy(ClientConfig(server.url, timeout_s=5)) as client:
        observation = Observation(FRAME, "open the drawer")
        assert [client.act(observation).values[0] for _ in range(2)] == [1, 2]
        client.reset()  # sent before the next request, without waiting for a reply
        assert client.act(observation).values[0] == 1 and client.stats["stale"] == 0


def test_the_client_never_waits_longer_than_its_timeout():
    with counting_server() as server, delayed(1500, server.port) as proxy:
        with CloudPolicy(ClientConfig(f"ws://127.0.0.1:{proxy.port}", timeout_s=0.25, connect_timeout_s=30)) as client:
            observation = Observation(FRAME, "open the drawer")
            for _ in range(3):
                start = time.perf_counter()
                action = client.act(observation)
                elapsed = time.perf_counter() - start
                assert action.source == "hold" and action.values.tolist() == [0, 0, 0, 0, 0]
                assert 0.24 <= elapsed < 0.25 + 0.5  # generous: a loaded machine, never the 1.5 s round trip
            assert client.stats["late"] == 3


def test_hybrid_mode_hands_late_steps_to_the_local_policy():
    local = CountingPolicy()
    with counting_server() as server, delayed(1000, server.port) as proxy:
        config = ClientConfig(f"ws://127.0.0.1:{proxy.port}", timeout_s=0.2, fallback="local", connect_timeout_s=30)
        with CloudPolicy(config, local=local) as client:
            client.reset()
            action = client.act(Observation(FRAME, "open the drawer"))
            assert action.source == "local" and action.reason == "late" and action.values[0] == 1
            assert local.calls == 1 and local.resets == 1
    with pytest.raises(UserError, match="local policy"):
        CloudPolicy(ClientConfig("ws://127.0.0.1:1", fallback="local"))


def test_lost_server_falls_back_at_once_and_the_client_reconnects():
    server = counting_server()
    port = server.port
    client = CloudPolicy(ClientConfig(server.url, timeout_s=0.5, reconnect_interval_s=0.1))
    try:
        observation = Observation(FRAME, "open the drawer")
        assert client.act(observation).source == "cloud"
        server.shutdown()
        actions, start = [], time.perf_counter()
        while len(actions) < 3:
            actions.append(client.act(observation))
        assert all(a.source == "hold" and a.reason == "disconnected" for a in actions)  # woken, not timed out
        assert time.perf_counter() - start < 0.5 * 3 + 1
        server = PolicyServer(lambda: CountingPolicy(), INFO, ServerConfig(port=port)).start()
        deadline = time.monotonic() + 10
        while client.act(observation).source != "cloud":
            assert time.monotonic() < deadline, client.stats
            time.sleep(0.05)
        assert client.stats["reconnects"] == 1
    finally:
        client.close()
        server.shutdown()


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError, match="python -m runtime serve"):
        CloudPolicy(ClientConfig(f"ws://127.0.0.1:{port}", connect_timeout_s=2))
    with pytest.raises(UserError, match="ws://"):
        ClientConfig("http://127.0.0.1:8765").check()


# -- netem proxy ------------------------------------------------------------------------------------
def test_shaper_bandwidth_order_and_loss_are_what_the_profile_says():
    import random

    slow = LinkShaper(NetProfile("x", up_mbit=1.0), True, random.Random(0))
    assert slow.release_time(125_000, now=0.0) == pytest.approx(1.0)  # 1 Mbit at 1 Mbit/s
    assert slow.release_time(125_000, now=0.5) == pytest.approx(2.0)  # queued behind the first
    jittery = LinkShaper(NetProfile("x", rtt_ms=100, jitter_ms=40), True, random.Random(0))
    times = [jittery.release_time(100, now=k * 0.001) for k in range(200)]
    assert times == sorted(times)  # jitter never reorders bytes (TCP)
    lossy = LinkShaper(NetProfile("x", loss=0.5, rto_ms=200), False, random.Random(0))
    delays = [lossy.release_time(1000, now=10.0 * k) - 10.0 * k for k in range(200)]
    assert set(np.round(delays, 6)) == {0.0, 0.2} and 60 < sum(d > 0 for d in delays) < 140


def test_wifi_round_trips_follow_the_published_percentiles():
    points = get_profile("wifi").rtt_quantiles_ms
    samples = np.array([sample_quantiles(points, u) for u in np.random.default_rng(0).random(20_000)])
    assert np.percentile(samples, 50) == pytest.approx(3.0, rel=0.1)
    assert np.percentile(samples, 90) == pytest.approx(20.0, rel=0.1)
    assert np.percentile(samples, 99) == pytest.approx(250.0, rel=0.15)
    assert set(PROFILES) >= {"lan", "wifi", "lte", "cloud"}


def test_proxy_adds_its_round_trip():
    with counting_server() as server, delayed(200, server.port, down_mbit=10) as proxy:
        with CloudPolicy(ClientConfig(f"ws://127.0.0.1:{proxy.port}", timeout_s=5)) as client:
            for _ in range(3):
                assert client.act(Observation(FRAME, "open the drawer")).source == "cloud"
            assert all(0.2 <= rtt < 2.0 for rtt in client.round_trips)


# -- on the smoke bundle: real ONNX Runtime sessions ---------------------------------------------------
@pytest.fixture(scope="module")
def bundle_server(smoke_bundle):
    from runtime.policy_server import bundle_server

    with bundle_server(smoke_bundle, ServerConfig(port=0)) as server:
        yield server


@pytest.fixture(scope="module")
def local_policy(smoke_bundle):
    from runtime.onnx_engine import OnnxPolicy

    return OnnxPolicy.load(smoke_bundle)


def _real_frames(tiny_dataset, count=12):
    from distill.dataset import Dataset

    dataset = Dataset.open(tiny_dataset)
    frames = []
    for index in range(len(dataset)):
        episode = dataset.load_episode(index)
        picks = np.linspace(0, len(episode) - 1, max(1, count // len(dataset))).astype(int)
        frames += [(episode.frames[k], episode.info.instruction) for k in picks]
    return frames


def test_cloud_actions_equal_local_actions(bundle_server, local_policy, tiny_dataset, smoke_bundle):
    with CloudPolicy(ClientConfig(bundle_server.url, timeout_s=10)) as client:
        assert client.hello["model"]["name"] == json.loads((smoke_bundle / "manifest.json").read_text())["model"]["name"]
        client.reset()
        for frame, instruction in _real_frames(tiny_dataset):
            observation = Observation(frame, instruction)
            cloud, local = client.act(observation), local_policy.act(observation)
            assert cloud.source == "cloud"
            assert cloud.values.tobytes() == local.values.tobytes() and np.array_equal(cloud.tokens, local.tokens)
            assert {"decode", "queue", "inference", "total"} <= set(cloud.server_timings)
        assert client.stats["bytes_sent"] > 12 * frame.nbytes  # raw frames: every pixel travelled
        with pytest.raises(CloudRequestError, match="unknown instruction"):
            client.act(Observation(frame, "juggle"))


class LogitsPolicy:
    """The bundle's real ONNX Runtime engine, acting with each dimension's best action logit: continuous
    values that change with every pixel, where the smoke model's tokens are the same for every frame."""

    def __init__(self, engine):
        self.engine = engine

    def reset(self):
        pass

    def act(self, observation):
        _, logits = self.engine.decode_actions(observation.image, observation.instruction)
        return Action(values=logits.max(axis=1))


def test_frames_arrive_bit_exact_at_the_real_engine(local_policy, tiny_dataset, smoke_bundle):
    from runtime.bundle import Bundle
    from runtime.policy_server import bundle_info

    local = LogitsPolicy(local_policy.engine)
    info = bundle_info(Bundle.load(smoke_bundle))
    with PolicyServer(lambda: local, info, ServerConfig(port=0)) as server:
        with CloudPolicy(ClientConfig(server.url, timeout_s=10)) as client:
            pairs = [(client.act(Observation(f, i)).values, local.act(Observation(f, i)).values)
                     for f, i in _real_frames(tiny_dataset)]
    assert all(cloud.tobytes() == here.tobytes() for cloud, here in pairs)
    assert len({here.tobytes() for _, here in pairs}) == len(pairs)  # every frame gives other values


def test_hybrid_with_the_real_student_behind_a_slow_network(bundle_server, local_policy, tiny_dataset):
    frame, instruction = _real_frames(tiny_dataset, 2)[0]
    observation = Observation(frame, instruction)
    with delayed(1000, bundle_server.port) as proxy:
        config = ClientConfig(f"ws://127.0.0.1:{proxy.port}", timeout_s=0.2, fallback="local", connect_timeout_s=30)
        with CloudPolicy(config, local=local_policy) as client:
            action = client.act(observation)
    assert action.source == "local" and action.values.tobytes() == local_policy.act(observation).values.tobytes()


@pytest.mark.skipif(not HAVE_SIM, reason="cloud-eval drives the simulator")
def test_cloud_eval_reports_success_and_fallbacks_per_profile(smoke_bundle, tmp_path):
    out = tmp_path / "cloud.json"
    proc = run_module("runtime", "cloud-eval", "--bundle", str(smoke_bundle), "--tasks", "drawer-open", "--seeds", "1",
                      "--profiles", "loopback,lte", "--rate", "10", "--timeout-ms", "25", "--max-steps", "4",
                      "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    loopback, lte = report["profiles"]["loopback"], report["profiles"]["lte"]
    assert loopback["episodes"] == lte["episodes"] == 1 and loopback["steps"] == 4
    assert loopback["cloud"] >= 1  # on loopback replies come back within 25 ms
    assert lte["cloud"] == 0 and lte["hold"] == lte["steps"] == 4 and lte["late"] == 4  # 70 ms RTT > 25 ms
    assert lte["round_trip_ms"]["p50"] >= 60
    assert "lte" in proc.stdout and "success" in proc.stdout


def test_cloud_commands_have_help_and_one_line_errors():
    for command in ("serve", "netem-proxy", "cloud-eval"):
        proc = run_module("runtime", command, "--help")
        assert proc.returncode == 0 and "Example" in proc.stdout, command
    proc = run_module("runtime", "netem-proxy", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:1", "--profile", "5g")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown network profile '5g'")
    assert proc.stderr.count("\n") == 1
    proc = run_module("runtime", "serve", "--bundle", "/nonexistent/bundle")
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
