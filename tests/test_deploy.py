"""deploy/: the systemd unit (systemd-analyze verify + required settings), install.sh (bash -n, shellcheck),
the EnvironmentFile example (every key known to Config, valid as is), the Dockerfile and docker-compose file
(structure, and their health-check commands run against a real HealthServer).

Docker itself is not available on the test machines, so images are never built here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from src.bot.http_server import HealthServer
from src.config import Config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "wyeli-bot.service"
ENV_EXAMPLE = DEPLOY / "wyeli.env.example"
INSTALL = DEPLOY / "install.sh"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"

# The only complaint `systemd-analyze verify` may make on a test machine: the venv python (and, on some
# systemd versions, the service user) does not exist here.
TOLERATED_VERIFY = (
    re.compile(r"^wyeli-bot\.service: Command /opt/wyeli/\.venv/bin/python is not executable: No such file or directory$"),
    re.compile(r"^wyeli-bot\.service: .*\buser\b.*\bwyeli\b.*(not found|does not exist|No such)", re.IGNORECASE),
)


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections -> [(key, value)] in order (unit files repeat keys such as Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def one(section: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in section if k == key]
    assert len(values) == 1, f"{key}= appears {len(values)} times"
    return values[0]


def run_verify(unit_path: Path) -> tuple[int, list[str]]:
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit_path)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return proc.returncode, lines


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (CI installs Debian's systemd package in .ci/run)",
)


# ---------------------------------------------------------------- systemd unit
@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify_except_for_the_missing_venv():
    _, lines = run_verify(UNIT)
    unexpected = [ln for ln in lines if not any(p.search(ln) for p in TOLERATED_VERIFY)]
    assert unexpected == []


@needs_systemd_analyze
def test_unit_with_an_existing_binary_verifies_with_no_complaint_at_all(tmp_path):
    text = UNIT.read_text().replace("ExecStart=/opt/wyeli/.venv/bin/python", f"ExecStart={sys.executable}")
    copy = tmp_path / "wyeli-bot.service"
    copy.write_text(text)
    rc, lines = run_verify(copy)
    assert (rc, lines) == (0, [])


@needs_systemd_analyze
def test_verify_catches_a_misplaced_key_so_the_check_is_real(tmp_path):
    text = UNIT.read_text().replace("[Service]\n", "[Service]\nStartLimitIntervalSec=60\n", 1)
    text = text.replace("ExecStart=/opt/wyeli/.venv/bin/python", f"ExecStart={sys.executable}")
    bad = tmp_path / "wyeli-bot.service"
    bad.write_text(text)
    _, lines = run_verify(bad)
    assert any("StartLimitIntervalSec" in ln for ln in lines)


def test_unit_has_notify_watchdog_restart_policy_and_start_limits_in_unit_section():
    u = parse_unit(UNIT.read_text())
    unit, service = u["Unit"], u["Service"]
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert int(one(service, "WatchdogSec")) >= 60
    assert one(service, "Restart") == "on-failure"
    assert one(service, "RestartPreventExitStatus") == "2"  # a configuration error is not restarted into the limit
    assert 5 <= int(one(service, "RestartSec")) <= 10
    assert int(one(unit, "StartLimitIntervalSec")) > 0 and int(one(unit, "StartLimitBurst")) > 0
    assert not any(k.startswith("StartLimit") for k, _ in service)
    assert 20 <= int(one(service, "TimeoutStopSec")) <= 60
    assert one(u["Install"], "WantedBy") == "multi-user.target"


def test_unit_runs_the_bot_from_opt_as_a_dedicated_user_with_state_under_var_lib():
    service = parse_unit(UNIT.read_text())["Service"]
    assert one(service, "WorkingDirectory") == "/opt/wyeli"
    assert one(service, "ExecStart") == "/opt/wyeli/.venv/bin/python -m src.bot.main"
    assert one(service, "User") not in ("root", "0")
    assert one(service, "EnvironmentFile") == "/etc/wyeli/wyeli.env"
    assert one(service, "StateDirectory") == "wyeli"
    env = dict(v.split("=", 1) for k, v in service if k == "Environment")
    assert env["PYTHONUNBUFFERED"] == "1"
    for var in ("SQLITE_PATH", "SPOOL_PATH"):  # replay databases go next to SQLITE_PATH (replays/)
        assert env[var].startswith("/var/lib/wyeli/"), var  # the only writable place under ProtectSystem=strict
    assert "CALIBRATION_PATH" not in env  # no longer used (issue 10): it would only print a warning
    assert (ROOT / "src" / "bot").is_dir()


def test_unit_hardening_keeps_af_unix_for_sd_notify():
    service = dict(parse_unit(UNIT.read_text())["Service"])
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectControlGroups", "RestrictNamespaces", "LockPersonality"):
        assert service[key] == "true", key
    assert service["ProtectSystem"] == "strict"
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


# ---------------------------------------------------------------- environment file
def env_example_lines() -> list[tuple[str, str, bool]]:
    """(KEY, value, active) for every KEY=value line, commented-out ones included."""
    out = []
    for raw in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^(#)?([A-Z][A-Z0-9_]*)=(.*)$", raw)
        if m:
            out.append((m.group(2), m.group(3), m.group(1) is None))
    return out


def test_env_example_names_only_variables_the_config_knows():
    known = {name for name, _ in Config().describe()}
    lines = env_example_lines()
    assert len(lines) > 10
    unknown = sorted({k for k, _, _ in lines} - known)
    assert unknown == []


def test_env_example_active_lines_validate_and_hold_no_secrets_or_inline_comments():
    active = {k: v for k, v, on in env_example_lines() if on}
    assert Config.from_env(active).problems == []
    for key, value in active.items():
        assert "#" not in value, f"{key}: systemd would keep an inline comment as part of the value"
        assert not value.startswith(("'", '"')), key
    for secret in ("DISCORD_TOKEN", "SUPABASE_SERVICE_KEY", "BINANCE_API_KEY", "BINANCE_API_SECRET", "DATABASE_URL"):
        assert secret not in active
    assert active["ENABLE_TRADING"] == "false"


# ---------------------------------------------------------------- install.sh
def test_install_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(INSTALL)], check=True, timeout=30)
    assert os.access(INSTALL, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_install_script_is_shellcheck_clean():
    proc = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout


def test_install_script_refuses_to_run_without_root():
    if os.geteuid() == 0:
        # as root, run it as nobody via setpriv when possible; otherwise the check is covered by shellcheck only
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv")
        # the checkout may sit in a directory nobody cannot enter (mktemp -d is 0700): run a readable copy
        spot = Path(tempfile.mkdtemp(prefix="wyeli-install-"))
        spot.chmod(0o755)
        script = spot / "install.sh"
        shutil.copy(INSTALL, script)
        script.chmod(0o755)
        cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(script)]
    else:
        spot = None
        cmd = ["bash", str(INSTALL)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    finally:
        if spot is not None:
            shutil.rmtree(spot, ignore_errors=True)
    assert proc.returncode == 1
    assert "run as root" in proc.stderr


def test_install_script_installs_the_files_this_repo_ships():
    text = INSTALL.read_text()
    assert "deploy/wyeli-bot.service" in text and UNIT.is_file()
    assert "deploy/wyeli.env.example" in text and ENV_EXAMPLE.is_file()
    assert "install -m 0600" in text
    assert '[ ! -e "$ENV_FILE" ]' in text  # never overwrites an existing env file


# ---------------------------------------------------------------- Dockerfile / compose
def dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_uses_slim_python_a_non_root_user_and_pinned_requirements():
    ins = dockerfile_instructions()
    ops = [op for op, _ in ins]
    assert ins[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ops.index("USER") < ops.index("CMD")
    assert any(op == "RUN" and "pip install -r requirements.txt" in arg for op, arg in ins)
    env = " ".join(arg for op, arg in ins if op == "ENV")
    assert "HTTP_HOST=0.0.0.0" in env
    assert json.loads(dict(ins)["CMD"]) == ["python", "-m", "src.bot.main"]
    for op, arg in ins:
        if op == "COPY":
            *sources, _dest = arg.split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY source missing: {src}"
    assert not any("curl" in arg for _, arg in ins)  # not in python:3.11-slim


def healthcheck_python_code() -> str:
    ins = dict(dockerfile_instructions())
    cmd = ins["HEALTHCHECK"].split(" CMD ", 1)[1]
    argv = shlex.split(cmd.split(" || ")[0])
    assert argv[:2] == ["python", "-c"]
    return argv[2]


def compose_healthcheck_code() -> str:
    m = re.search(r'test: (\["CMD", "python".*\])', COMPOSE.read_text())
    assert m, "bot healthcheck not found"
    argv = json.loads(m.group(1))
    assert argv[:3] == ["CMD", "python", "-c"]
    return str(argv[3])


@pytest.mark.parametrize("source", ["Dockerfile", "docker-compose.yml"])
async def test_container_healthcheck_command_passes_on_a_live_server_and_fails_without_one(source, tmp_path):
    import asyncio

    code = healthcheck_python_code() if source == "Dockerfile" else compose_healthcheck_code()
    srv = HealthServer(port=0)
    await srv.start()
    port = srv.bound_port
    assert port is not None
    if source == "docker-compose.yml":
        code = code.replace(":8080/", f":{port}/")
    env = {**os.environ, "HTTP_PORT": str(port)}

    async def run() -> int:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env, cwd=tmp_path,
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        return await asyncio.wait_for(proc.wait(), 30)

    try:
        assert await run() == 0
    finally:
        await srv.stop()
    assert await run() != 0  # nothing listens any more


def compose_services(text: str) -> dict[str, str]:
    """Top-level service name -> its indented block (a structural check; PyYAML is not a dependency)."""
    assert "\t" not in text
    block = re.search(r"^services:\n((?:(?:  .*)?\n)+)", text, re.MULTILINE)
    assert block
    services: dict[str, str] = {}
    name = None
    for line in block.group(1).splitlines():
        m = re.match(r"^  ([a-z][a-z0-9_-]*):\s*$", line)
        if m:
            name = m.group(1)
            services[name] = ""
        elif name:
            services[name] += line + "\n"
    return services


def test_compose_runs_bot_postgres_and_redis_with_healthchecks_and_volumes():
    text = COMPOSE.read_text()
    services = compose_services(text)
    assert set(services) == {"bot", "postgres", "redis"}
    for name, body in services.items():
        assert "healthcheck:" in body, name
        assert "restart: unless-stopped" in body, name
    bot = services["bot"]
    assert "dockerfile: deploy/Dockerfile" in bot
    assert re.search(r"DATABASE_URL: postgresql://\S+@postgres:5432/", bot)
    assert "REDIS_URL: redis://redis:6379/" in bot and "CACHE_TYPE: redis" in bot
    assert "condition: service_healthy" in bot
    assert '"127.0.0.1:8080:8080"' in bot  # metrics and health stay on the host's loopback
    assert "bot-data:/data" in bot and "pg-data:/var/lib/postgresql/data" in services["postgres"]
    assert re.search(r"^volumes:\n  bot-data:\n  pg-data:\n", text, re.MULTILINE)
    for line in text.splitlines():
        stripped = line.split(" #")[0].rstrip()
        if stripped.strip():
            assert (len(stripped) - len(stripped.lstrip())) % 2 == 0, f"odd indentation: {line!r}"
        m = re.search(r"test: (\[.*\])$", stripped)
        if m:
            json.loads(m.group(1))  # flow lists must be valid (JSON is valid YAML)


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    patterns = (ROOT / ".dockerignore").read_text().split()
    for p in (".env", ".venv", ".git", "data", "deploy/wyeli.env"):
        assert p in patterns
