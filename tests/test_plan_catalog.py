"""The shipped catalog snapshot, GPU names, SkyPilot CSV parsing and offline refresh."""

from __future__ import annotations

import csv
import json

import pytest

from stratos_agent import catalog
from stratos_agent.errors import InputError


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATOS_CACHE_DIR", str(tmp_path / "cache"))
    from stratos_agent.settings import get_settings

    get_settings.cache_clear()
    yield tmp_path / "cache"
    get_settings.cache_clear()


def test_snapshot_covers_providers_and_gpus_with_sources(cache_dir):
    cat = catalog.load_catalog()
    assert cat.kind == "snapshot" and cat.age_days >= 0
    assert len({o.provider for o in cat.offers}) >= 5
    assert len(cat.gpus()) >= 10
    for o in cat.offers:
        assert o.source.startswith("http") and o.date
        assert o.mem_bw_gbps > 0 and o.bf16_tflops > 0 and o.gpu_memory_gb > 0
        assert o.spot_usd_h is None or o.spot_usd_h < o.on_demand_usd_h


def test_canonical_gpu_names():
    assert catalog.canonical_gpu("h100") == "H100"
    assert catalog.canonical_gpu("a100-80gb") == "A100-80GB"
    assert catalog.canonical_gpu("NVIDIA RTX 4090") == "RTX4090"
    with pytest.raises(InputError, match="unknown GPU 'B9000'"):
        catalog.canonical_gpu("B9000")


def _write_sky_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [
        "InstanceType",
        "AcceleratorName",
        "AcceleratorCount",
        "vCPUs",
        "MemoryGiB",
        "GpuInfo",
        "Price",
        "SpotPrice",
        "Region",
        "AvailabilityZone",
    ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow(dict(zip(fields, row, strict=True)))


def test_rows_from_skypilot_csv(tmp_path):
    _write_sky_csv(
        tmp_path / "aws" / "vms.csv",
        [
            ("p4d.24xlarge", "A100", 8, 96, 1152, "", 32.77, 9.8, "us-east-1", "us-east-1a"),
            ("p4d.24xlarge", "A100", 8, 96, 1152, "", 30.00, "", "us-west-2", "us-west-2a"),
            ("m5.large", "", "", 2, 8, "", 0.096, 0.03, "us-east-1", "us-east-1a"),  # no GPU
            ("x.weird", "TPU-v9", 1, 8, 8, "", 1.0, 0.5, "us-east-1", "us-east-1a"),  # no datasheet
        ],
    )
    rows = catalog.rows_from_skypilot(tmp_path, ("aws", "gcp"))
    assert len(rows) == 1
    (row,) = rows
    assert row["gpu"] == "A100-40GB" and row["region"] == "us-west-2" and row["spot_usd_h"] is None
    assert row["source"] == "skypilot:aws/vms.csv"


def test_refresh_offline_keeps_snapshot_and_shows_age(cache_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.sky cache either
    result = catalog.refresh_catalog(offline=True)
    assert not result.refreshed
    assert "days old" in result.message and "offline" in result.message
    assert result.catalog.kind == "snapshot"


def test_refresh_from_cached_skypilot_csvs(cache_dir, monkeypatch, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    _write_sky_csv(
        home / ".sky" / "catalogs" / "v7" / "lambda" / "vms.csv",
        [
            ("gpu_1x_h100_pcie", "H100", 1, 26, 200, "", 2.49, "", "us-east-1", ""),
        ],
    )
    result = catalog.refresh_catalog(offline=True)
    assert result.refreshed
    cat = catalog.load_catalog()  # the refreshed copy wins over the snapshot
    assert cat.kind == "skypilot" and [o.instance_type for o in cat.offers] == ["gpu_1x_h100_pcie"]
    assert json.loads(catalog.refreshed_path().read_text())["rows"][0]["on_demand_usd_h"] == 2.49


def test_broken_refreshed_catalog_names_the_line(cache_dir):
    path = catalog.refreshed_path()
    path.parent.mkdir(parents=True)
    path.write_text('{"rows": [\n  oops\n]}')
    with pytest.raises(InputError, match="line 2"):
        catalog.load_catalog()
