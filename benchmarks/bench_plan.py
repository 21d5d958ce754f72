"""plan: 1,000 user x candidate runs on digits features, serial vs all cores (and Dask).

20 simulated users (every digit, 6 examples per class each) x 50 candidates (48 network-head
settings, no update, one k-NN), each run training and scoring at 1 and 3 examples per class.
The frozen part runs once per example for the whole plan. Prints the BLAS library and thread
counts each side used, the times, the ratio, and checks that every side gives the same rows.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from plan_helpers import digits_model, shared_npz, users_npz  # noqa: E402
from updatable_coreml.plan import Grid, plan  # noqa: E402

GRID = Grid(
    lrs=(0.003, 0.01, 0.03, 0.1),
    epochs=(5, 10, 20),
    batches=(4, 8),
    trainable=("all", "last"),
    ks=(3,),
    weightings=("uniform",),
)


def blas() -> str:
    from threadpoolctl import threadpool_info

    return (
        "; ".join(
            f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)"
            for i in threadpool_info()
        )
        or "none found"
    )


def timed(label: str, files: dict, out: Path, **options) -> tuple[float, list]:
    start = time.perf_counter()
    result = plan(
        files["model"],
        files["users"],
        shared=files["shared"],
        output=out,
        shots=(1, 3),
        grid=GRID,
        plots=False,
        **options,
    )
    seconds = time.perf_counter() - start
    runs = len({(r["user"], r["candidate"]) for r in result.rows})
    print(
        f"{label:<28} {seconds:7.2f} s  ({runs} user x candidate runs, "
        f"{len(result.rows)} trainings)",
        flush=True,
    )
    return seconds, result.rows


def main() -> int:
    import joblib

    print(f"cpu_count: os {os.cpu_count()}, joblib {joblib.cpu_count()}; BLAS: {blas()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            "model": digits_model(root / "m.mlmodel"),
            "users": users_npz(root / "u.npz", users=20, per_class=6, classes=range(10)),
            "shared": shared_npz(root / "s.npz", count=300),
        }
        serial, rows = timed("serial (n_jobs=1)", files, root / "a", n_jobs=1)
        parallel, rows_p = timed("loky, all cores (n_jobs=-1)", files, root / "b", n_jobs=-1)
        print(f"serial / all cores: {serial / parallel:.2f}x")
        same = rows == rows_p
        try:
            from distributed import Client
        except ImportError:
            print("dask: distributed is not installed (pip install distributed)")
        else:
            with Client(processes=False, dashboard_address=None) as client:
                workers = client.nthreads()
                dask, rows_d = timed(
                    f"dask local ({sum(workers.values())} threads)",
                    files,
                    root / "c",
                    backend="dask",
                )
            print(f"serial / dask: {serial / dask:.2f}x")
            same = same and rows == rows_d
    print("same rows on every backend:", same)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
