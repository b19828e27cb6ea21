"""Running it as users run bots: the systemd unit in deploy/ and `citebot doctor`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "citebot.service"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_unit_restarts_on_failure_as_its_own_user_with_the_token_from_a_file():
    d = directives(UNIT.read_text(encoding="utf-8"))
    assert d["Restart"] == ["on-failure"] and d["User"] == ["citebot"] and d["NoNewPrivileges"] == ["yes"]
    assert d["EnvironmentFile"] and "DISCORD_TOKEN" not in "".join(d.get("Environment", []))
    assert d["ExecStart"][0].endswith("citebot bot") and d["ProtectSystem"] == ["strict"]
    assert d["ReadOnlyPaths"] == ["/srv/citebot/docs"] and d["ReadWritePaths"] == ["/var/lib/citebot"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    # the unit's programs are not installed here: point ExecStart at one that is, keep everything else
    unit = tmp_path / "citebot.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/opt/citebot/.venv/bin/citebot bot", "/bin/true"),
                    encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if str(unit) in line or "citebot" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_doctor_names_what_to_fix_and_never_prints_the_token(tmp_path, capsys, monkeypatch):
    token = "MTIz.secret-part.never-shown"
    monkeypatch.setenv("DISCORD_TOKEN", token)
    docs = tmp_path / "docs"
    args = ["--docs", str(docs), "--index", str(tmp_path / "index"), "doctor"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"✗ documents: {docs} is not a folder" in out and "✗ index: none in" in out
    assert "run `citebot index`" in out and "✓ Discord token: set in DISCORD_TOKEN" in out
    assert token not in out and "secret-part" not in out
    shutil.copytree(ROOT / "docs", docs)
    assert main(["--docs", str(docs), "--index", str(tmp_path / "index"), "index"]) == 0
    capsys.readouterr()
    monkeypatch.delenv("DISCORD_TOKEN")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "✓ documents:" in out and "5 document files" in out and "✓ index: 5 documents" in out
    assert "! Discord token: not set" in out and out.rstrip().endswith("nothing to fix")
    assert "✓ confidence cut: 0." in out and "calibrated for this index" in out

    # an index calibrated by an older rule (or never): a warning that says how to recalibrate, not a failure
    from index.calibration import VERSION
    from index.store import CALIBRATION_FILE
    cal = (tmp_path / "index" / "current").resolve() / CALIBRATION_FILE
    cal.write_text(cal.read_text().replace(f'"version": {VERSION}', f'"version": {VERSION - 1}'))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"! confidence cut: 0." in out and f"older rule (version {VERSION - 1}, now {VERSION})" in out
    assert main(["--docs", str(docs), "--index", str(tmp_path / "index"), "index"]) == 0
    capsys.readouterr()
    assert main(args) == 0 and "calibrated for this index" in capsys.readouterr().out
    ((tmp_path / "index" / "current").resolve() / CALIBRATION_FILE).unlink()
    assert main(args) == 0 and "built before cuts were calibrated" in capsys.readouterr().out
    monkeypatch.setenv("CITEBOT_RETRIEVAL_MIN_SCORE", "0.5")
    assert main(args) == 0 and "✓ confidence cut: 0.500, fixed by retrieval.min_score" in capsys.readouterr().out
