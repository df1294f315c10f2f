"""The worked example of docs/quality.md, run for real: profile → drift → feedback → compare → promote, and
the plot docs/images/drift.png (reference vs live histogram of the drifted feature) from the run's data.

    .venv/bin/python scripts/quality_example.py [--output docs/images/drift.png] [--transcript FILE]

It builds a temporary repository with one model, ``churn`` (input ``x`` FP32 [rows, 4], output ``probs``
FP32 [rows, 2]): v1, the champion, looks at feature 0 only; v2, the challenger in shadow, at features 0
and 2. The truth is ``x0 + x2 + noise > 0``. It then

1. writes both versions' reference.npz with ``inferd profile`` from a training sample (N(0, 1) features);
2. serves the repository with ``inferd serve`` (tests/e2e/server_process.py) and sends in-distribution
   traffic (no drift), then traffic whose feature 2 is shifted by +1.5 until v1 reports drift;
3. sends the truth of every request with ``Client.feedback``;
4. runs ``inferd stats``-style reads, ``inferd compare churn`` and ``inferd traffic`` (the promotion).

The live histogram in the plot is **recomputed from the rows the script sent** during the shifted phase,
in the reference's own bins (``FeatureProfile.counts``); the PSI in its title is the one the server
reported (``VersionStatistics.drift``) for the same feature, so the plot and the server can be checked
against each other.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MODEL = """
import numpy as np

class Model:
    def infer(self, inputs):
        x = np.asarray(inputs["x"], dtype=np.float32)
        score = SCORE
        p = 1.0 / (1.0 + np.exp(-3.0 * score))
        return {"probs": np.stack([1.0 - p, p], axis=1).astype(np.float32)}
"""

CONFIG = """
max_batch_size: 64
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "probs" data_type: DATA_TYPE_FP32 dims: [-1, 2] }
version_policy { all {} }
version_labels { key: "stable" value: 1 }
version_labels { key: "candidate" value: 2 }
shadow { label: "candidate" fraction: 1.0 }
drift { window_rows: 2000 sample_fraction: 1.0 }
feedback {}
"""

ROWS_PER_REQUEST = 20
WINDOW_ROWS = 2000  # drift.window_rows in CONFIG
DRIFTED = 2  # the column shifted in the live traffic
SHIFT = 1.5


def truth(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (x[:, 0] + x[:, 2] + 0.5 * rng.standard_normal(len(x)) > 0).astype(np.int64)


def inferd(address: str | None, *args: str) -> str:
    from tests.e2e.server_process import find_tool, tool_env

    command = [find_tool("inferd"), *args, *(["--address", address] if address else [])]
    done = subprocess.run(command, cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "images" / "drift.png")
    parser.add_argument("--transcript", type=Path, help="also write the commands' output here")
    parser.add_argument("--requests", type=int, default=150, help="requests per phase (20 rows each)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inferd import Client
    from inferd.profile import PROFILE_FILE, load_profile, psi
    from tests.e2e.server_process import ServerProcess
    from tests.support import eventually, write_model

    rng = np.random.default_rng(17)
    log: list[str] = []

    def say(text: str) -> None:
        print(text)
        log.append(text)

    work = Path(tempfile.mkdtemp(prefix="inferd-quality-"))
    root = work / "models"
    scores = {1: "x[:, 0]", 2: "x[:, 0] + x[:, 2]"}
    write_model(root, "churn", CONFIG, {v: MODEL.replace("SCORE", s) for v, s in scores.items()})
    train = rng.standard_normal((5000, 4)).astype(np.float32)
    np.savez(work / "train.npz", x=train)
    for version in scores:
        say(f"$ inferd profile --model-dir models/churn/{version} --data train.npz")
        say(
            inferd(
                None, "profile", "--model-dir", str(root / "churn" / str(version)), "--data", str(work / "train.npz")
            )
        )

    server = ServerProcess(root, work / "server").wait_ready()
    try:
        with Client(server.address, timeout=30) as client:
            sent: dict[str, np.ndarray] = {}

            def send(phase: str, shift: float) -> np.ndarray:
                rows = []
                for i in range(args.requests):
                    x = rng.standard_normal((ROWS_PER_REQUEST, 4)).astype(np.float32)
                    x[:, DRIFTED] += shift
                    request_id = f"{phase}-{i}"
                    client.predict_response("churn", {"x": x}, request_id=request_id)
                    sent[request_id] = x
                    rows.append(x)
                return np.concatenate(rows)

            def drift(version: int) -> Any:
                (stats,) = client.statistics("churn", version)
                return stats.drift

            send("calm", 0.0)
            eventually(lambda: drift(1).window_rows >= 2000, what="a full live window", timeout=60)
            calm = drift(1)
            say(
                f"in-distribution traffic: v1 drifting={calm.drifting}, "
                + ", ".join(f"x[{f.column}] PSI {f.psi:.3f}" for f in calm.features)
            )
            live = send("shifted", SHIFT)
            eventually(lambda: drift(1).drifting, what="drift flagged on v1", timeout=60)
            time.sleep(1.0)  # let the background summary take in the whole shifted window
            shifted = drift(1)
            say(
                f"shifted traffic (x[{DRIFTED}] + {SHIFT}): v1 drifting={shifted.drifting}, "
                + ", ".join(
                    f"x[{f.column}] PSI {f.psi:.3f}{' DRIFTING' if f.drifting else ''}" for f in shifted.features
                )
            )
            say("$ inferd stats churn")
            say(inferd(server.address, "stats", "churn"))

            def mirrored() -> int:
                (stats,) = client.statistics("churn", 2)
                return sum(c.compared + c.errors + c.dropped for c in stats.shadow)

            eventually(lambda: mirrored() >= len(sent), what="every request mirrored to v2", timeout=60)
            for request_id, x in sent.items():
                client.feedback("churn", request_id, truth(x, rng))
            say("$ inferd compare churn")
            say(inferd(server.address, "compare", "churn"))
            say("$ inferd shadow churn --off")
            say(inferd(server.address, "shadow", "churn", "--off"))
            say("$ inferd traffic churn --label stable=2 --label previous=1")
            say(inferd(server.address, "traffic", "churn", "--label", "stable=2", "--label", "previous=1"))
            server_psi = {f.column: f.psi for f in shifted.features if f.tensor == "x"}
    finally:
        code = server.terminate()
        if code:
            print(server.log()[-4000:], file=sys.stderr)

    profile = load_profile(root / "churn" / "1" / PROFILE_FILE)
    features = {f.column: f for f in profile.features if f.tensor == "x"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, column in zip(axes, (DRIFTED, 0), strict=True):
        feature = features[column]
        counts = feature.counts(live[-WINDOW_ROWS:, column])  # the rows of the server's live window
        live_freq = counts / counts.sum()
        edges = np.asarray(feature.edges)
        labels = [f"< {edges[0]:.2f}"] + [f"{a:.2f}…{b:.2f}" for a, b in itertools.pairwise(edges)]
        labels += [f"≥ {edges[-1]:.2f}"]
        positions = np.arange(len(feature.freq))
        ax.bar(positions - 0.2, feature.freq, width=0.4, label="reference (inferd profile)", color="#4c72b0")
        ax.bar(positions + 0.2, live_freq, width=0.4, label="live (shifted phase)", color="#dd8452")
        ax.set_xticks(positions, labels, rotation=60, fontsize=7)
        state = "drifting" if server_psi.get(column, 0) > 0.2 else "stable"
        ax.set_title(
            f"x[{column}]: server PSI {server_psi.get(column, float('nan')):.2f} ({state}), "
            f"recomputed {psi(feature.freq, counts):.2f}",
            fontsize=10,
        )
        ax.set_xlabel("reference bins (quantiles of the training sample)", fontsize=8)
    axes[0].set_ylabel("share of rows")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"churn v1: reference vs live window, feature 2 shifted by +{SHIFT} (last {WINDOW_ROWS} rows)", fontsize=11
    )
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    say(f"wrote {args.output}")
    if args.transcript:
        args.transcript.write_text("\n".join(log) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
