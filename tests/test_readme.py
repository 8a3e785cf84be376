"""The README's ring example runs as printed, and the example program works between processes."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_ring_example_runs_as_printed() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # the asserts inside check the results
    assert not Path("/dev/shm/nanomq.orders").exists(), "the creator unlinks the ring on close"


def test_ipc_example_moves_every_message_between_two_processes() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ipc_ring.py"), "20000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "consumer: 20000 messages, sum of sequence numbers 199990000" in out
    assert "expected sum of sequence numbers 199990000" in out


def test_readme_log_example_runs_as_printed(tmp_path: Path, monkeypatch) -> None:
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "nanomq.log" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})  # the asserts inside check the results
    assert sorted(p.name for p in (tmp_path / "data" / "orders-0").glob("*.log")) == [f"{0:020d}.log"]


def test_readme_broker_example_runs_as_printed(tmp_path: Path) -> None:
    from broker_util import BrokerProcess  # tests/broker_util.py

    text = (ROOT / "README.md").read_text()
    shell = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "nanomq broker" in b)
    args = shell.split("#")[0].split()
    assert args[:2] == ["nanomq", "broker"]
    options = [a for a in args[2:] if a.startswith("--auto")]  # port and data dir are the test's own
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "Publisher" in b)
    broker = BrokerProcess(tmp_path / "nanomq-data", *options)
    try:
        exec(compile(block.replace("127.0.0.1:9000", broker.address), "README.md", "exec"), {})
    finally:
        broker.stop()
