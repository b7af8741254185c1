"""The pytest kit as a user meets it: installed lockgate, an ini line, a test that uses `lockgate`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

APP = '''
import datetime
import inngest, inngest.fast_api
from fastapi import FastAPI

client = inngest.Inngest(app_id="kit-demo")

@client.create_function(fn_id="nap", trigger=inngest.TriggerEvent(event="demo/nap"))
async def nap(ctx: inngest.Context) -> dict:
    await ctx.step.run("charge", lambda: "charged")
    await ctx.step.sleep("wait-a-day", datetime.timedelta(days=1))
    return {"charged": True, "name": ctx.event.data["name"]}

app = FastAPI()
inngest.fast_api.serve(app, client, [nap])
'''

# The README's example, as a user's test file.
TEST = '''
def test_nap(lockgate):
    [event_id] = lockgate.send({"name": "demo/nap", "data": {"name": "Ada"}})
    run = lockgate.wait_for_run(event_id, status="Completed", fast_forward=True)
    assert run.output == {"charged": True, "name": "Ada"}
    assert [s["name"] for s in run.steps] == ["charge", "wait-a-day"]
'''


def run_pytest(folder, ini: str) -> subprocess.CompletedProcess:
    (folder / "pyproject.toml").write_text(f"[tool.pytest.ini_options]\n{ini}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INNGEST_", "LOCKGATE_"))}
    env["PYTHONPATH"] = str(folder)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_users_project_tests_its_function_with_a_day_long_sleep(tmp_path):
    (tmp_path / "demo_app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "test_demo.py").write_text(textwrap.dedent(TEST))
    done = run_pytest(tmp_path, 'lockgate_app = "demo_app:app"')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_without_an_app_the_kit_says_how_to_name_one(tmp_path):
    (tmp_path / "test_demo.py").write_text(textwrap.dedent(TEST))
    done = run_pytest(tmp_path, "")
    assert done.returncode != 0
    assert "lockgate_app = " in done.stdout + done.stderr and "lockgate_app_target" in done.stdout + done.stderr


def test_sync_of_a_url_registers_the_app_or_says_why_not(lockgate_server, lockgate_app):
    # what `lockgate_app = "http://…"` does: PUT the serve URL, then check lockgate has its functions
    from lockgate.testing import LockgateClient, LockgateError
    from lockgate.testing.kit import free_port

    client = LockgateClient(lockgate_server)
    synced = client.sync(lockgate_app)
    assert synced["name"] == "shop" and len(synced["functions"]) == 3
    nowhere = f"http://127.0.0.1:{free_port()}/api/inngest"
    with pytest.raises(LockgateError, match=f"could not reach the app at {nowhere}"):
        client.sync(nowhere)
