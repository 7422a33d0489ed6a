"""The decode engine's time budget on real 1280x720 frames: frames with no code stop near the
budget (passes whose measured cost would not fit are skipped), and frames with a label still
decode. A behaviour test with a generous tolerance, not a benchmark."""

from __future__ import annotations

import statistics
import time

import numpy as np
import numpy.typing as npt

from edge_agent.scan.engine import DecodeEngine
from simulators.camera import Impairments, make_labels, render_frame

SIZE = (1280, 720)
BUDGET_S = 0.08


def no_code_frames(count: int) -> list[npt.NDArray[np.uint8]]:
    """Empty belts from the camera simulator, a blank frame and pure sensor noise."""
    rng = np.random.default_rng(11)
    imp = Impairments(blur=1.0, tilt=0.12, glare=0.35, noise=6.0)
    frames = [render_frame(None, SIZE, imp, rng) for _ in range(count - 2)]
    frames.append(np.full((SIZE[1], SIZE[0]), 200, dtype=np.uint8))
    frames.append(rng.integers(0, 256, (SIZE[1], SIZE[0]), dtype=np.uint8))
    return frames


def test_no_code_frames_stay_within_the_budget() -> None:
    engine = DecodeEngine(budget_s=BUDGET_S)
    frames = no_code_frames(8)
    for frame in frames[:2]:  # the engine learns what its passes cost on this machine
        engine.decode(frame)

    # per frame the lesser of wall time and this process's CPU time: a frame the OS preempted
    # on a loaded machine (a CI run's other workers) once took 351 ms of wall time without the
    # engine spending more than its budget, and OpenCV's own threads can spend more CPU than
    # wall time on a machine of many cores. What is tested is that the engine stops its
    # passes; only a frame long by both clocks is one it overspent on
    elapsed: list[float] = []
    for i, frame in enumerate(frames):
        t0, c0 = time.perf_counter(), time.process_time()
        result = engine.decode(frame)
        elapsed.append(min(time.perf_counter() - t0, time.process_time() - c0))
        assert result.codes == []
        if i < len(frames) - 2:  # on a belt the budget ends the frame, not the list of passes
            assert result.out_of_time

    print(f"no-code 720p frames: {[round(e * 1000, 1) for e in elapsed]} ms, budget 80 ms")
    assert statistics.median(elapsed) <= BUDGET_S * 1.3
    assert max(elapsed) <= BUDGET_S * 2  # one frame may meet a busy machine, not every one


def test_a_spent_budget_leaves_only_the_first_pass() -> None:
    engine = DecodeEngine(budget_s=0.0)
    result = engine.decode(no_code_frames(2)[0])
    assert result.passes == ["fast"]
    assert result.out_of_time


def test_label_frames_decode_on_the_first_pass_within_the_budget() -> None:
    rng = np.random.default_rng(5)
    labels = make_labels(6, 1, 0, seed=5)
    imp = Impairments(blur=1.0, tilt=0.12, glare=0.35, noise=6.0)
    engine = DecodeEngine(budget_s=BUDGET_S)
    for label in labels:
        result = engine.decode(render_frame(label, SIZE, imp, rng))
        assert [c.text for c in result.codes] == [label.text]
        assert result.passes == ["fast"]
        assert not result.out_of_time
