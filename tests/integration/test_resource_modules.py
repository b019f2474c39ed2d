"""Resource guarantees (issue 16) through the modules: the jail module takes the new limits (and names
a bad one), jail_info returns the beancounters with `usage: true`."""

from __future__ import annotations

from pathlib import Path

from test_modules import adhoc

from jailyard.config import Config


def test_jail_module_takes_resource_limits_and_jail_info_returns_usage(cfg: Config, tmp_path: Path) -> None:
    limits = {"cpu_weight": 200, "cpu_rate": 0.5, "io_weight": 50, "memsw": "1G"}
    ok, result = adhoc(cfg, tmp_path, "jail", {"name": "res", "uid": 12031, "limits": limits, "state": "present"})
    assert ok, result
    assert result["jail"]["spec"]["limits"] == {
        **cfg.default_limits(),
        "cpu_weight": 200,
        "cpu_rate": 0.5,
        "io_weight": 50,
        "memsw": 1 << 30,
    }
    ok, again = adhoc(cfg, tmp_path, "jail", {"name": "res", "limits": limits, "state": "present"})
    assert ok and not again["changed"], again
    ok, info = adhoc(cfg, tmp_path, "jail_info", {"name": "res", "usage": True})
    assert ok, info
    usage = info["jails"][0]["usage"]
    assert set(usage) == {"memory", "procs", "cpu", "disk", "inodes"}
    assert usage["cpu"]["limit"] == 0.5
    ok, plain = adhoc(cfg, tmp_path, "jail_info", {"name": "res"})
    assert ok and "usage" not in plain["jails"][0]


def test_jail_module_names_a_non_numeric_size(cfg: Config, tmp_path: Path) -> None:
    ok, result = adhoc(cfg, tmp_path, "jail", {"name": "res", "uid": 12031, "limits": {"memsw": "lots"}, "state": "present"})
    assert not ok
    assert "limits.memsw of res must be a size in bytes" in result["msg"] and "'lots'" in result["msg"], result["msg"]
    assert not (cfg.tenants_dir / "res").exists()
