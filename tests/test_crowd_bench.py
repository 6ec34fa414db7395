"""The crowd benchmark (tools/bench/crowd.py) without a real Colyseus or worldserver run.

Checks the parser of the Colyseus harness's JSON line (a line recorded by the harness), the
table and its ratios, the patch of the harness copy's ``run_bench.sh`` (``--speed`` passed on
to ``bots.mjs``) and the copy itself, the real harness script run with stand-in ``node`` and
``npm`` programs (the bots' arguments, the JSON line, nothing left running), the skip path
when ``node`` or the harness is missing, and server_load's refreshed share from the server's
counters (present, cumulative or per interval, or absent).
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess

import pytest

from worldtools.bench import crowd, server_load
from worldtools.server_process import ServerProcess, ServerStartError

HARNESS = crowd.DEFAULT_HARNESS

# Recorded by the Colyseus harness (results/sweep.jsonl, N=200, 2026-12).
SAMPLE = (
    '{"framework":"colyseus","n":200,"seconds":20,"warmup_s":5,"bot_procs":1,"observers":8,'
    '"connect_concurrency":25,"y_mode":"flat","connected":200,"join_failures":0,"drops":0,'
    '"leaves":0,"errors":0,"connect_all_ms":631.68,"join_ms":{"p50":61.42,"p99":144.42,'
    '"max":146.02},"server_cpu_pct":13.34,"server_cpu_pct_1s_max":16.88,'
    '"server_rss_mb_idle":72.93,"server_rss_mb_after_connect":90.09,'
    '"server_rss_mb_window_mean":106.62,"server_rss_mb_window_max":106.65,"server_threads":11,'
    '"server_nonvoluntary_ctxsw_per_s":8.59,"machine_cpu":{"cpu":{"busy_pct":16.53,'
    '"softirq_pct":2.68,"steal_pct":0},"cpu0":{"busy_pct":11.97,"softirq_pct":1.9,'
    '"steal_pct":0},"cpu1":{"busy_pct":21.2,"softirq_pct":3.4,"steal_pct":0.05}},'
    '"bots_total_cpu_pct":21.93,"unattributed_cpu_pct":-3.51,"foreign_cpu_pct":1.3,'
    '"foreign_cpu_top":["kdamond.0:77:0.6%","process_api:1:0.35%","memfd:sealed-91:2526:0.1%"],'
    '"machine_busy_pct_before_run":4,"server_cpus_allowed":"0","bot_cpus_allowed":"1",'
    '"rx_bytes_per_bot_per_s":69057.36,"rx_bytes_per_bot_per_s_min":69057.36,'
    '"rx_bytes_per_bot_per_s_max":69057.36,"rx_frames_per_bot_per_s":19.98,'
    '"rx_avg_frame_bytes":3456.89,"rx_ws_wire_bytes_per_bot_per_s_est":69137.26,'
    '"moves_sent_per_bot_per_s":20,"moves_sent_total_per_s":3999.49,"bot_ticks_skipped":0,'
    '"server_moves_received_per_s":4000.244,"moves_received_ratio":1,'
    '"latency_move_to_observe_ms":{"n":631889,"mean":29.44,"p50":29.6,"p90":48.8,"p99":54.3,'
    '"max":67.63},"latency_matched":631889,"latency_unmatched":0,"observer_patch_gap_ms":'
    '{"n":3192,"mean":50.1,"p50":50.1,"p90":51.1,"p99":54.4,"max":62.18},"server":'
    '{"window_s":20.037,"clients_start":200,"clients_end":200,"players_in_state":200,'
    '"moves_received":80151,"moves_per_s":4000.244,"patches":400,"patches_per_s":19.964,'
    '"patch_interval_ms":{"mean":50.098,"p50":50.139,"p99":51.003,"max":51.102,'
    '"late_over_75ms":0},"patch_duration_ms":{"mean":2.515,"p50":2.239,"p99":4.407,'
    '"max":6.592},"event_loop_lag_ms":{"p50":0.158,"p99":2.886,"max":6.056},'
    '"self_cpu_pct":13.375,"rss_mb":106.559,"heap_used_mb":26.831},"bot_procs_cpu_pct":[21.43],'
    '"bot_procs_event_loop_lag_ms_p99":[1.74],"server_keeps_up":true,"generator_ok":true,'
    '"window_elapsed_s":20.02,"node":"v20.20.2"}'
)

BOTS_LINE = (
    'timeout -k 5 "$BOT_LIMIT" $BOT_CPUS node bots.mjs --n "$N" --seconds "$SECS" \\\n'
    '  --warmup "$WARMUP_S" --observers "$OBSERVERS" >"$LOG_DIR/bots-$N.json" &\n'
)


def _ws_row(**extra) -> dict:
    """A server_load.run_one row as it comes out of a 200-bot run (figures invented)."""
    row = dict(
        bots=200, server_alive=True, window_s=20.0, server_cpu_percent=26.68,
        bytes_out_per_client_s=7100, late_ms_p50=dict(median=0.4, worst=0.9),
        late_ms_p99=dict(median=1.5, worst=3.2), refreshed_share=None, pinning="pinned",
        speed=1.5, other_cpu_percent=2.0,
        swarm=dict(
            connected=200, failures=0, bytes_per_bot_s=6905.7, snapshots_per_bot_s=19.9,
            parts_per_bot_s=39.8, observed_refreshed_share=0.93, latency_ms_p50=35.0,
            latency_ms_p99=61.0, latency_samples=500, inputs_per_bot_s=20.0, packet_loss=0.0,
            observed_entities_mean=199.0, cpu_percent=30.0,
        ),
    )  # fmt: skip
    row.update(extra)
    return row


def _result(entries: list[dict]) -> dict:
    return dict(
        machine=dict(nproc=2, cpu_model="test", python="3.11", loadavg_at_start=[0.1, 0.1, 0.1]),
        settings=dict(server_sets=list(crowd.CROWD_SETS), speed=1.5, warmup=20.0, duration=30.0,
                      observers=8, pinning="server on CPU 0, bots on CPU 1"),
        runs=entries,
    )


# ----------------------------------------------------------------------------- parsing


def test_parse_colyseus_reads_the_recorded_line_among_other_output():
    text = "npm warn EBADENGINE something\n{not json\n" + SAMPLE + "\n"
    s = crowd.parse_colyseus(text)
    assert s["bots"] == 200 and s["connected"] == 200 and s["failures"] == 0
    assert s["server_cpu_percent"] == 13.34
    assert s["bytes_per_client_s"] == 69057.36
    assert s["snapshots_per_client_s"] == 19.98
    assert (s["latency_ms_p50"], s["latency_ms_p99"]) == (29.6, 54.3)
    assert s["latency_samples"] == 631889
    assert s["patch_interval_ms_p99"] == 51.003
    assert s["moves_per_bot_s"] == 20
    assert (s["server_cpus"], s["bot_cpus"]) == ("0", "1")
    assert s["server_keeps_up"] is True and s["generator_ok"] is True
    assert s["refreshed_share"] == 1.0
    assert s["window_s"] == 20.037


def test_parse_colyseus_takes_the_last_line_and_refuses_output_without_one():
    other = json.loads(SAMPLE)
    other["server_cpu_pct"] = 99.0
    assert crowd.parse_colyseus(SAMPLE + "\n" + json.dumps(other))["server_cpu_percent"] == 99.0
    with pytest.raises(crowd.HarnessError):
        crowd.parse_colyseus('npm ci failed\n{"framework": "other"}\n')


# ----------------------------------------------------------------------------- the table


def test_table_has_ratios_worldserver_over_colyseus():
    col = crowd.parse_colyseus(SAMPLE)
    ws = crowd.worldserver_summary(_ws_row(refreshed_share=0.8123))
    rows = crowd.table_rows(dict(bots=200, colyseus=col, worldserver=ws))
    assert [r[1] for r in rows] == ["colyseus", "worldserver"]
    head = {name: i for i, name in reversed(list(enumerate(crowd.HEAD)))}  # first of a name
    c, w = rows
    assert c[head["server CPU%"]] == "13.3" and w[head["server CPU%"]] == "26.7"
    assert w[head["server CPU%"] + 1] == "2.00"  # 26.68 / 13.34
    assert c[head["B/client/s"]] == "69,057" and w[head["B/client/s"]] == "6,906"
    assert w[head["B/client/s"] + 1] == "0.10"
    assert w[head["snap/client/s"]] == "19.9" and w[head["parts/client/s"]] == "39.8"
    assert w[head["refreshed"]] == "0.81" and c[head["refreshed"]] == "1.00 (all)"
    assert c[head["move->obs p50/p99 ms"]] == "30/54"
    assert w[head["move->obs p50/p99 ms"]] == "35/61"
    assert w[head["late p50/p99 ms"]] == "0.4/1.5" and c[head["late p50/p99 ms"]] == "n/a"
    text = crowd.format_table(_result([dict(bots=200, colyseus=col, worldserver=ws)]))
    lines = text.splitlines()
    assert any(line.split()[:2] == ["200", "worldserver"] for line in lines)
    assert "observers saw 0.93" in text


def test_table_without_counters_or_colyseus_says_so():
    ws = crowd.worldserver_summary(_ws_row())  # no refreshed_share: the counters were absent
    entry = dict(bots=400, colyseus=dict(skipped="node not found on PATH"), worldserver=ws)
    rows = crowd.table_rows(entry)
    assert rows[0][:3] == ("400", "colyseus", "skipped: node not found on PATH")
    w = rows[1]
    assert w[crowd.HEAD.index("ratio")] == "n/a"  # no Colyseus CPU to divide by
    assert w[crowd.HEAD.index("refreshed")] == "n/a"
    text = crowd.format_table(_result([entry]))
    assert "skipped: node not found on PATH" in text
    failed = crowd.table_rows(dict(bots=400, colyseus=dict(error="run_bench.sh exited with 1"),
                                   worldserver=dict(bots=400, error="RuntimeError: boom")))
    assert failed[0][2] == "error: run_bench.sh exited with 1"
    assert failed[1][2] == "error: RuntimeError: boom"


# ----------------------------------------------------------------------------- the harness copy


def test_patch_passes_the_speed_on_to_the_bots():
    script = "#!/usr/bin/env bash\nset -euo pipefail\n" + BOTS_LINE
    patched = crowd.patch_run_bench(script)
    assert 'node bots.mjs --speed "${BOT_SPEED:-1.5}" --n "$N"' in patched
    assert patched.replace('--speed "${BOT_SPEED:-1.5}" ', "") == script
    out = subprocess.run(  # the shell expands it as bots.mjs will see it
        ["bash", "-c", 'printf "%s|" node bots.mjs --speed "${BOT_SPEED:-1.5}"'],
        env=dict(os.environ, BOT_SPEED="5"), capture_output=True, text=True, check=True,
    ).stdout
    assert out == "node|bots.mjs|--speed|5|"
    with pytest.raises(crowd.HarnessError, match="already passes --speed"):
        crowd.patch_run_bench(patched)
    with pytest.raises(crowd.HarnessError, match="expected one"):
        crowd.patch_run_bench("#!/bin/sh\nnode server.mjs\n")
    with pytest.raises(crowd.HarnessError, match="found 2"):
        crowd.patch_run_bench(script + BOTS_LINE)


def _read_only_harness(root: pathlib.Path) -> pathlib.Path:
    src = root / "harness"
    (src / "node_modules" / "pkg").mkdir(parents=True)
    (src / "results" / "tmp").mkdir(parents=True)
    (src / "results" / "sweep.jsonl").write_text(SAMPLE + "\n")
    (src / "run_bench.sh").write_text("#!/usr/bin/env bash\n" + BOTS_LINE)
    for name in ("bots.mjs", "server.mjs", "package-lock.json", ".npmrc", "sweep.sh"):
        (src / name).write_text(f"// {name}\n")
    (src / "sweep.sh").chmod(0o555)
    for path in src.rglob("*"):
        if path.is_file():
            path.chmod(path.stat().st_mode & 0o555)
    return src


def test_prepare_harness_copies_without_node_modules_and_keeps_the_copys(tmp_path):
    src = _read_only_harness(tmp_path)
    scratch = tmp_path / "scratch"
    (scratch / "node_modules").mkdir(parents=True)
    (scratch / "node_modules" / ".bench-lock-sum").write_text("abc\n")
    for _ in range(2):  # a second run overwrites the read-only copies
        copy = crowd.prepare_harness(src, scratch)
    assert copy == scratch
    assert (copy / "node_modules" / ".bench-lock-sum").read_text() == "abc\n"  # npm ci once
    assert not (copy / "node_modules" / "pkg").exists()
    assert not (copy / "results").exists()
    assert (copy / ".npmrc").read_text() == "// .npmrc\n"
    script = copy / "run_bench.sh"
    assert '--speed "${BOT_SPEED:-1.5}"' in script.read_text()
    assert script.stat().st_mode & stat.S_IXUSR
    assert (copy / "sweep.sh").stat().st_mode & stat.S_IXUSR
    assert not (copy / "bots.mjs").stat().st_mode & stat.S_IXUSR
    assert "--speed" not in (src / "run_bench.sh").read_text()  # the original is untouched


def _processes_in(directory: pathlib.Path) -> list[int]:
    """Live processes whose working directory is ``directory`` (the harness's and its own)."""
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if pathlib.Path(os.readlink(entry / "cwd")) == directory:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


FAKE_NODE = """#!/usr/bin/env bash
# Stands in for node: a free port, a server that says READY and waits to be stopped, and
# bots that record their arguments and print the recorded JSON line.
case "$1" in
  -e) echo 45999 ;;
  server.mjs) echo READY; exec tail -f /dev/null ;;
  bots.mjs) shift; printf '%s\\n' "$@" > "$FAKE_ARGS"; cat "$FAKE_LINE" ;;
  *) exit 3 ;;
esac
"""
FAKE_NPM = """#!/usr/bin/env bash
[ "$1" = ci ] && mkdir -p node_modules && echo "npm ci $*" >> "$FAKE_NPM_LOG"
"""


@pytest.mark.skipif(not (HARNESS / "run_bench.sh").is_file(), reason="no Colyseus harness here")
def test_real_harness_copy_runs_with_stand_in_node(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("node", FAKE_NODE), ("npm", FAKE_NPM)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "line.json").write_text(SAMPLE + "\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ARGS", str(tmp_path / "args.txt"))
    monkeypatch.setenv("FAKE_LINE", str(tmp_path / "line.json"))
    monkeypatch.setenv("FAKE_NPM_LOG", str(tmp_path / "npm.log"))
    monkeypatch.setenv("QUIET_HOLD_S", "0")  # the harness's quiet-machine probe: no pause

    copy = crowd.prepare_harness(HARNESS, tmp_path / "scratch")
    s = crowd.run_colyseus(copy, 30, 7, warmup=3, speed=1.5, observers=8, timeout=60)

    assert s["server_cpu_percent"] == 13.34 and s["speed"] == 1.5
    args = (tmp_path / "args.txt").read_text().split("\n")
    given = dict(zip(args[0::2], args[1::2]))
    assert given["--speed"] == "1.5"
    assert given["--n"] == "30" and given["--seconds"] == "7"
    assert given["--warmup"] == "3" and given["--observers"] == "8"
    assert "npm ci" in (tmp_path / "npm.log").read_text()
    assert (copy / "node_modules" / ".bench-lock-sum").is_file()
    # The stand-in server was stopped by the harness's trap, or by run_colyseus after it.
    assert not _processes_in(copy)


@pytest.mark.skipif(not (HARNESS / "run_bench.sh").is_file(), reason="no Colyseus harness here")
def test_failing_harness_is_an_error_and_stops_what_it_started(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The server starts and waits; the bots fail: run_bench.sh exits 1 after its cleanup.
    (bin_dir / "node").write_text(FAKE_NODE.replace('cat "$FAKE_LINE"', "exit 7"))
    (bin_dir / "npm").write_text(FAKE_NPM)
    for name in ("node", "npm"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ARGS", str(tmp_path / "args.txt"))
    monkeypatch.setenv("FAKE_NPM_LOG", str(tmp_path / "npm.log"))
    monkeypatch.setenv("QUIET_HOLD_S", "0")
    copy = crowd.prepare_harness(HARNESS, tmp_path / "scratch")
    with pytest.raises(crowd.HarnessError, match="exited with 1"):
        crowd.run_colyseus(copy, 30, 7, warmup=3, speed=1.5, observers=8, timeout=60)
    assert not _processes_in(copy)


# ----------------------------------------------------------------------------- skipping


def test_skip_reasons(tmp_path):
    src = _read_only_harness(tmp_path)
    assert crowd.colyseus_skip_reason(src, "/usr/bin/node") is None
    assert crowd.colyseus_skip_reason(src, None) == "node not found on PATH"
    assert crowd.colyseus_skip_reason(tmp_path / "absent", "/usr/bin/node").startswith(
        "harness not found at"
    )
    (src / "bots.mjs").chmod(0o644)
    (src / "bots.mjs").unlink()
    assert crowd.colyseus_skip_reason(src, "/usr/bin/node").endswith("has no bots.mjs")


def test_main_skips_colyseus_without_node(tmp_path, monkeypatch, capsys):
    src = _read_only_harness(tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no node here
    scratch = tmp_path / "scratch"
    status = crowd.main(["--bots", "200,400", "--only", "colyseus", "--colyseus-dir", str(src),
                         "--scratch", str(scratch), "--json", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [r["colyseus"] for r in result["runs"]] == [{"skipped": "node not found on PATH"}] * 2
    assert all("worldserver" not in r for r in result["runs"])
    assert result["runs"][0]["ratios"] == {"server_cpu": None, "bytes_per_client_s": None}
    assert not scratch.exists()  # nothing copied, nothing run

    status = crowd.main(["--bots", "200", "--only", "colyseus", "--colyseus-dir",
                         str(tmp_path / "absent"), "--scratch", str(scratch), "--quiet"])
    text = capsys.readouterr().out
    assert status == 0
    assert "colyseus  skipped: node not found on PATH" in text


def test_a_worldserver_that_cannot_start_is_reported_with_its_own_error(tmp_path, capsys):
    """The server's one-line error (a setting it refused) is what the benchmark says, at once on
    stderr and in its table's row, and the run counts as failed."""
    line = "error: no.such: unknown setting"
    with pytest.raises(ServerStartError) as failed:
        server = ServerProcess(["no.such=1"])
        try:
            server.wait_listening()
        finally:
            server.stop()
    assert str(failed.value) == f"the server did not start (exit code 2): {line}"
    status = crowd.main(["--bots", "2", "--only", "worldserver", "--duration", "1", "--warmup", "0",
                         "--set", "no.such=1", "--no-pin", "--quiet", "--scratch", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 1
    expected = f"ServerStartError: the server did not start (exit code 2): {line}"
    assert err.strip().splitlines() == [f"crowd: worldserver 2: {expected}"]
    rows = out.splitlines()
    assert any(row.endswith(f"2  worldserver  error: {expected}") for row in rows)  # one row, one line
    assert not any(row.strip() == line for row in rows)  # not broken over two lines


# ----------------------------------------------------------------------------- server counters


def _stats(ts: int, **fields) -> dict:
    return dict(msg="stats", ts=f"2026-12-06T00:00:{ts:02d}Z", clients=200, **fields)


def test_refreshed_share_from_cumulative_counters():
    before = _stats(1, **{"snapshot.entities_visible": 1000, "snapshot.entities_refreshed": 900})
    lines = [
        _stats(2, **{"snapshot.entities_visible": 5000, "snapshot.entities_refreshed": 2900}),
        _stats(3, **{"snapshot.entities_visible": 9000, "snapshot.entities_refreshed": 4900}),
    ]
    assert server_load.refreshed_share(lines, before) == 0.5  # (4900-900) / (9000-1000)
    assert server_load.refreshed_share(lines, None) == 0.5  # from the first window line
    nested = [dict(_stats(2), counters={"snapshot.entities_visible": 10, "snapshot.entities_sent": 10}),
              dict(_stats(3), counters={"snapshot.entities_visible": 30, "snapshot.entities_sent": 20})]
    assert server_load.refreshed_share(nested, None) == 0.5
    grouped = [dict(_stats(2), snapshot={"entities_visible": 10, "entities_sent": 10}),
               dict(_stats(3), snapshot={"entities_visible": 30, "entities_sent": 20})]
    assert server_load.refreshed_share(grouped, None) == 0.5


def test_refreshed_share_from_per_interval_counters_and_without_counters():
    lines = [
        _stats(2, snapshot_entities_visible=4000, snapshot_entities_sent=1000),
        _stats(3, snapshot_entities_visible=3000, snapshot_entities_sent=2000),
    ]
    assert server_load.refreshed_share(lines, None) == round(3000 / 7000, 4)  # summed
    assert server_load.refreshed_share([_stats(2), _stats(3)], None) is None
    partial = [_stats(2, **{"snapshot.entities_visible": 5, "snapshot.entities_sent": 5}), _stats(3)]
    assert server_load.refreshed_share(partial, None) is None
    zero = [_stats(2, **{"snapshot.entities_visible": 0, "snapshot.entities_sent": 0})] * 2
    assert server_load.refreshed_share(zero, None) is None


def test_pin_plan_follows_the_harness_rule(monkeypatch):
    monkeypatch.setattr(server_load.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(server_load.shutil, "which", lambda name: "/usr/bin/taskset")
    prefix, cpus, note = server_load.pin_plan(True)
    assert prefix == ["/usr/bin/taskset", "-c", "0"] and cpus == {1}
    assert server_load.pin_plan(False)[:2] == ([], None)
    monkeypatch.setattr(server_load.os, "cpu_count", lambda: 1)
    assert server_load.pin_plan(True)[:2] == ([], None)
    monkeypatch.setattr(server_load.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(server_load.shutil, "which", lambda name: None)
    assert server_load.pin_plan(True) == ([], None, "not pinned (no taskset)")


def test_server_load_reads_a_real_servers_counters_in_the_crowd_scenario():
    """server_load against a real ``worldserver run``: its stats lines carry the counters."""
    from types import SimpleNamespace

    from worldtools import swarm

    args = SimpleNamespace(
        duration=4.0, warmup=2.0, processes=1, observers=3, seed=5, set=list(crowd.CROWD_SETS),
        speed=1.5, pin=False, quiet=True,
    )  # fmt: skip
    row = server_load.run_one(swarm, 8, args)
    s = row["swarm"]
    assert row["server_alive"] and s["connected"] == 8 and s["failures"] == 0
    assert row["stats_lines"] >= 1
    assert 0.5 < row["refreshed_share"] <= 1.0  # 8 bots in view of each other: nearly all
    assert s["snapshots_per_bot_s"] > 10.0
    assert s["parts_per_bot_s"] >= s["snapshots_per_bot_s"]
    assert row["late_ms_p50"]["median"] is not None
    assert row["speed"] == 1.5 and row["pinning"] == "not pinned (not asked)"
    summary = crowd.worldserver_summary(row)
    assert summary["refreshed_share"] == row["refreshed_share"]
    assert summary["refreshed_share_source"] == "server counters"


def test_wait_for_quiet_waits_for_a_quiet_machine_within_its_bound(monkeypatch):
    readings = iter([50.0, 40.0, 5.0, 99.0])
    monkeypatch.setattr(crowd, "machine_busy_percent", lambda hold: next(readings))
    said = []
    assert crowd.wait_for_quiet(60.0, say=said.append) == 5.0
    assert len(said) == 2  # two busy readings, then quiet
    assert crowd.wait_for_quiet(0.0) == 99.0  # no time to wait: the reading is returned
    ws = dict(crowd.worldserver_summary(_ws_row()), machine_busy_before_percent=99.0)
    text = crowd.format_table(_result([dict(bots=200, colyseus=dict(skipped="x"), worldserver=ws)]))
    assert "the machine was 99% busy just before the worldserver run" in text
