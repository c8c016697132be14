"""Fetching: the registry against the real mirror, checksums, and downloads from a real local HTTP server."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import runpy
import socket
import sys
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner

from kepitfalls import cli, config, layout
from kepitfalls.data import gdrive
from kepitfalls.data.download import MANIFEST, fetch_benchmark, fetch_files, verify_downloads
from kepitfalls.data.errors import ChecksumError, DataError, DownloadError, OfflineError
from kepitfalls.data.registry import Benchmark, FileSpec, benchmark_names, get_benchmark
from kepitfalls.data.remote import RetryPolicy
from kepitfalls.params import ParamsError, load_params, load_sections, mirror_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_FILES = ("piqa/valid-labels.lst", "mquake/prompts/rel-prompts.json")


class SleepLog:
    """Records the backoff delays instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def fast_retry(sleep: SleepLog, attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, base_delay=0.01, timeout=5.0, sleep=sleep)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serve(body: bytes, content_type: str = "application/octet-stream", headers: dict[str, str] | None = None):
    def route(handler: BaseHTTPRequestHandler, hit: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)
    return route


def cut_off(body: bytes, times: int):
    """Announce the full length, send half the body and drop the connection, `times` times; then serve."""
    def route(handler: BaseHTTPRequestHandler, hit: int) -> None:
        if hit > times:
            return serve(body)(handler, hit)
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()
        handler.close_connection = True
    return route


def status_then(code: int, times: int, body: bytes):
    def route(handler: BaseHTTPRequestHandler, hit: int) -> None:
        if hit > times:
            return serve(body)(handler, hit)
        handler.send_error(code)
    return route


def leftovers(dest: Path) -> list[str]:
    """Anything in `dest` that is not a finished file named by the registry (temp files, archives)."""
    return sorted(p.name for p in dest.rglob("*") if p.name.startswith("."))


def one_file_benchmark(url: str, relpath: str, sha: str | None, member: str | None = None) -> Benchmark:
    return Benchmark("local", "served by the test's HTTP server", (FileSpec(relpath, url, sha, member=member),))


# --- registry against the real mirror -------------------------------------------------------------


def mirror_sums(mirror: Path) -> dict[str, str]:
    sums = {}
    for line in (mirror / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        sums[path.removeprefix("./")] = digest
    return sums


def test_benchmark_names_are_the_mirror_folders(data_mirror: Path) -> None:
    assert benchmark_names() == sorted(p.name for p in data_mirror.iterdir() if p.is_dir())


def test_required_files_are_exactly_the_mirrored_files_with_their_hashes(data_mirror: Path) -> None:
    required = {
        f"{name}/{spec.relpath}": spec.sha256
        for name in benchmark_names()
        for spec in get_benchmark(name).files_to_fetch(include_optional=False)
    }
    assert required == mirror_sums(data_mirror)


def test_optional_files_are_the_ones_the_mirror_lacks(data_mirror: Path) -> None:
    for name in benchmark_names():
        for spec in get_benchmark(name).files:
            assert spec.url.startswith("https://")
            assert (data_mirror / name / spec.relpath).is_file() == (not spec.optional), spec.relpath


def test_unknown_benchmark_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="counterfact"):
        get_benchmark("nope")


@pytest.mark.parametrize("name", benchmark_names())
def test_fetch_every_benchmark_from_the_mirror(name: str, data_mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / name
    manifest = fetch_benchmark(name, dest, data_mirror)
    specs = get_benchmark(name).files_to_fetch(include_optional=False)
    assert [e["file"] for e in manifest["files"]] == [s.relpath for s in specs]
    for entry, spec in zip(manifest["files"], specs):
        data = (dest / spec.relpath).read_bytes()
        assert entry["sha256"] == sha256(data) == spec.sha256
        assert entry["bytes"] == len(data)
        assert entry["source"] == f"mirror:{name}/{spec.relpath}"
    assert json.loads((dest / MANIFEST).read_text()) == manifest
    assert leftovers(dest) == []


def test_flipped_byte_in_the_mirror_is_rejected(data_mirror: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "gsm8k").mkdir(parents=True)
    data = bytearray((data_mirror / "gsm8k" / "test.jsonl").read_bytes())
    data[1000] ^= 0x01
    (mirror / "gsm8k" / "test.jsonl").write_bytes(data)
    dest = tmp_path / "raw" / "gsm8k"
    with pytest.raises(ChecksumError) as caught:
        fetch_benchmark("gsm8k", dest, mirror)
    message = str(caught.value)
    assert "gsm8k/test.jsonl" in message
    assert get_benchmark("gsm8k").files[0].sha256 in message and sha256(bytes(data)) in message
    assert not (dest / "test.jsonl").exists() and not (dest / MANIFEST).exists()
    assert leftovers(dest) == []


def test_a_failed_fetch_vouches_for_nothing_it_did_not_verify(data_mirror: Path, tmp_path: Path) -> None:
    """A stale file from before is left as it was, with no manifest, so no reader accepts it."""
    mirror = tmp_path / "mirror"
    (mirror / "gsm8k").mkdir(parents=True)
    (mirror / "gsm8k" / "test.jsonl").write_bytes(b"not gsm8k\n")
    dest = tmp_path / "raw" / "gsm8k"
    dest.mkdir(parents=True)
    (dest / "test.jsonl").write_bytes(b"old\n")
    with pytest.raises(ChecksumError):
        fetch_benchmark("gsm8k", dest, mirror)
    assert (dest / "test.jsonl").read_bytes() == b"old\n" and not (dest / MANIFEST).exists()
    with pytest.raises(DataError, match="MANIFEST.json is missing"):
        verify_downloads(tmp_path / "raw")


def flipped_mirror(data_mirror: Path, tmp_path: Path) -> Path:
    mirror = tmp_path / "bad-mirror"
    (mirror / "gsm8k").mkdir(parents=True)
    data = bytearray((data_mirror / "gsm8k" / "test.jsonl").read_bytes())
    data[1000] ^= 0x01
    (mirror / "gsm8k" / "test.jsonl").write_bytes(data)
    return mirror


def test_a_failed_fetch_leaves_the_previous_verified_files_in_place(data_mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "raw" / "gsm8k"
    fetch_benchmark("gsm8k", dest, data_mirror)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    for mirror, error in ((flipped_mirror(data_mirror, tmp_path), ChecksumError), (tmp_path / "no-such-mirror", DataError)):
        with pytest.raises(error):
            fetch_benchmark("gsm8k", dest, mirror)
        assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
        verify_downloads(tmp_path / "raw")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["gsm8k"]  # no staging folder left beside it


def test_a_mirror_that_does_not_exist_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-mirror"
    with pytest.raises(DataError, match=f"benchmark mirror {missing} does not exist"):
        fetch_benchmark("gsm8k", tmp_path / "raw" / "gsm8k", missing)
    params = load_params().model_copy(update={"data": config.Data(mirror=str(missing), benchmarks={})})
    monkeypatch.delenv("KEPITFALLS_MIRROR", raising=False)
    with pytest.raises(ParamsError, match=f"data.mirror = '{missing}'"):
        mirror_dir(params)
    monkeypatch.setenv("KEPITFALLS_MIRROR", str(missing / "env"))
    with pytest.raises(ParamsError, match=r"\$KEPITFALLS_MIRROR = .*no-such-mirror/env"):
        mirror_dir(params)


def test_fetch_command_with_a_missing_mirror_names_it_and_keeps_the_files(data_mirror: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(layout, "raw_root", lambda: tmp_path / "raw")
    runner = CliRunner()
    assert runner.invoke(cli.main, ["fetch", "gsm8k", "--mirror", str(data_mirror)]).exit_code == 0
    result = runner.invoke(cli.main, ["fetch", "gsm8k", "--mirror", str(tmp_path / "nope")])
    assert result.exit_code != 0 and str(tmp_path / "nope") in result.output and "does not exist" in result.output
    verify_downloads(tmp_path / "raw")


def test_a_byte_flipped_after_the_download_stops_the_select_stage(data_mirror: Path, tmp_path: Path, monkeypatch) -> None:
    raw = tmp_path / "raw"
    fetch_benchmark("gsm8k", raw / "gsm8k", data_mirror)
    verify_downloads(raw)
    data = bytearray((raw / "gsm8k" / "test.jsonl").read_bytes())
    data[1000] ^= 0x01
    (raw / "gsm8k" / "test.jsonl").write_bytes(data)
    monkeypatch.setattr(layout, "raw_root", lambda: raw)
    monkeypatch.setattr(sys, "argv", ["select_records.py", "counterfact"])
    with pytest.raises(ChecksumError, match=r"gsm8k/test.jsonl \(from .*test.jsonl, checked against .*MANIFEST.json\)"):
        runpy.run_path(str(REPO_ROOT / "stages" / "select_records.py"), run_name="__main__")


def test_a_download_that_yields_no_file_is_an_error(tmp_path: Path) -> None:
    only_optional = Benchmark("local", "", (FileSpec("x.txt", "https://example.org/x", None, optional=True),))
    with pytest.raises(DownloadError, match="local: nothing to fetch"):
        fetch_files(only_optional, tmp_path / "local", None)
    assert not (tmp_path / "local").exists()


def test_every_benchmark_has_a_required_file() -> None:
    for name in benchmark_names():
        assert get_benchmark(name).files_to_fetch(include_optional=False), name


# --- downloads from a real HTTP server on 127.0.0.1 ------------------------------------------------


def test_download_good_files_with_spaces_in_paths(http_server, data_mirror: Path, tmp_path: Path) -> None:
    specs = []
    for i, rel in enumerate(SMALL_FILES):
        body = (data_mirror / rel).read_bytes()
        http_server.routes[f"/files/f{i}"] = serve(body)
        specs.append(FileSpec(f"Some Folder/{Path(rel).name}", http_server.url(f"/files/f{i}"), sha256(body)))
    dest = tmp_path / "raw" / "local"
    manifest = fetch_files(Benchmark("local", "", tuple(specs)), dest, mirror=None, retry=fast_retry(SleepLog()))
    for entry, spec, rel in zip(manifest["files"], specs, SMALL_FILES):
        assert (dest / spec.relpath).read_bytes() == (data_mirror / rel).read_bytes()
        assert entry["source"] == spec.url and entry["sha256_published"] is True
    assert leftovers(dest) == []


def test_mirror_without_the_file_falls_back_to_the_url(http_server, tmp_path: Path) -> None:
    http_server.routes["/x"] = serve(b"payload")
    (tmp_path / "mirror" / "local").mkdir(parents=True)
    bench = one_file_benchmark(http_server.url("/x"), "x.txt", sha256(b"payload"))
    manifest = fetch_files(bench, tmp_path / "dest", tmp_path / "mirror", retry=fast_retry(SleepLog()))
    assert manifest["files"][0]["source"] == http_server.url("/x")


def test_unpublished_hash_is_computed_and_recorded(http_server, tmp_path: Path) -> None:
    http_server.routes["/x"] = serve(b"no published hash")
    manifest = fetch_files(one_file_benchmark(http_server.url("/x"), "x.txt", None), tmp_path, None, retry=fast_retry(SleepLog()))
    assert manifest["files"][0]["sha256"] == sha256(b"no published hash")
    assert manifest["files"][0]["sha256_published"] is False


def test_corrupted_download_is_rejected_and_leaves_nothing(http_server, data_mirror: Path, tmp_path: Path) -> None:
    good = (data_mirror / SMALL_FILES[0]).read_bytes()
    bad = good.replace(b"1", b"0", 1)
    http_server.routes["/labels"] = serve(bad)
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError) as caught:
        fetch_files(one_file_benchmark(http_server.url("/labels"), "valid-labels.lst", sha256(good)), dest, None,
                    retry=fast_retry(SleepLog()))
    assert sha256(good) in str(caught.value) and sha256(bad) in str(caught.value)
    assert not (dest / "valid-labels.lst").exists() and leftovers(dest) == []


def test_interrupted_download_is_retried_then_succeeds(http_server, data_mirror: Path, tmp_path: Path) -> None:
    body = (data_mirror / SMALL_FILES[1]).read_bytes()
    http_server.routes["/rel"] = cut_off(body, times=1)
    sleep = SleepLog()
    fetch_files(one_file_benchmark(http_server.url("/rel"), "rel-prompts.json", sha256(body)), tmp_path, None,
                retry=fast_retry(sleep))
    assert (tmp_path / "rel-prompts.json").read_bytes() == body
    assert http_server.hits["/rel"] == 2 and sleep.delays == [0.01]


def test_download_interrupted_every_time_fails_cleanly(http_server, data_mirror: Path, tmp_path: Path) -> None:
    body = (data_mirror / SMALL_FILES[1]).read_bytes()
    http_server.routes["/rel"] = cut_off(body, times=99)
    sleep = SleepLog()
    url = http_server.url("/rel")
    with pytest.raises(DownloadError, match=url) as caught:
        fetch_files(one_file_benchmark(url, "rel-prompts.json", sha256(body)), tmp_path, None, retry=fast_retry(sleep, 3))
    assert not isinstance(caught.value, OfflineError)
    assert http_server.hits["/rel"] == 3 and sleep.delays == [0.01, 0.02]
    assert not (tmp_path / "rel-prompts.json").exists() and leftovers(tmp_path) == []


def test_server_errors_are_retried_but_not_found_is_not(http_server, tmp_path: Path) -> None:
    http_server.routes["/busy"] = status_then(503, times=2, body=b"ok")
    fetch_files(one_file_benchmark(http_server.url("/busy"), "busy.txt", sha256(b"ok")), tmp_path, None,
                retry=fast_retry(SleepLog()))
    assert (tmp_path / "busy.txt").read_bytes() == b"ok" and http_server.hits["/busy"] == 3
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_files(one_file_benchmark(http_server.url("/missing"), "m.txt", None), tmp_path, None, retry=fast_retry(SleepLog()))
    assert http_server.hits["/missing"] == 1


def test_offline_error_names_the_url_and_the_mirror_setting(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/file.json"
    sleep = SleepLog()
    with pytest.raises(OfflineError) as caught:
        fetch_files(one_file_benchmark(url, "file.json", None), tmp_path, None, retry=fast_retry(sleep, 2))
    message = str(caught.value)
    assert url in message and "KEPITFALLS_MIRROR" in message and "data.mirror" in message
    assert sleep.delays == [0.01] and not (tmp_path / "file.json").exists()


# --- Google Drive confirmation step and archive members --------------------------------------------


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def drive_cookie_flow(body: bytes):
    """Old Drive: a warning page with a download_warning cookie; the file once confirm=<token> is sent."""
    def route(handler: BaseHTTPRequestHandler, hit: int) -> None:
        if "confirm=TOKEN42" in handler.path:
            return serve(body)(handler, hit)
        page = b"<html>Google Drive can't scan this file for viruses.</html>"
        serve(page, "text/html; charset=utf-8", {"Set-Cookie": "download_warning_13058876669334088843_abc=TOKEN42; Path=/"})(handler, hit)
    return route


def drive_form_page(handler: BaseHTTPRequestHandler, hit: int) -> None:
    """Current Drive: a warning page whose download-form names the real URL in hidden inputs."""
    page = (b'<html><form id="download-form" action="/download" method="get">'
            b'<input type="hidden" name="id" value="abc"><input type="hidden" name="export" value="download">'
            b'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1">'
            b'<input type="submit" value="Download anyway"></form></html>')
    serve(page, "text/html")(handler, hit)


def test_google_drive_cookie_confirmation_and_zip_members(http_server, data_mirror: Path, tmp_path: Path) -> None:
    one_hop = data_mirror / "easyedit_portability/portability/One Hop/zsre_mend_eval_portability_gpt4.json"
    inverse = data_mirror / "easyedit_portability/portability/Inverse Relation/zsre_inverse_relation.json"
    archive = zip_of({
        "editing-data/portability/One Hop/zsre_mend_eval_portability_gpt4.json": one_hop.read_bytes(),
        "editing-data/portability/Inverse Relation/zsre_inverse_relation.json": inverse.read_bytes(),
    })
    http_server.routes["/uc"] = drive_cookie_flow(archive)
    url = http_server.url("/uc?export=download&id=abc")
    bench = Benchmark("local", "", (
        FileSpec("portability/One Hop/zsre_mend_eval_portability_gpt4.json", url, sha256(one_hop.read_bytes()),
                 member="editing-data/portability/One Hop/zsre_mend_eval_portability_gpt4.json"),
        FileSpec("portability/Inverse Relation/zsre_inverse_relation.json", url, sha256(inverse.read_bytes()),
                 member="portability/Inverse Relation/zsre_inverse_relation.json"),  # found under editing-data/
    ))
    manifest = fetch_files(bench, tmp_path, None, retry=fast_retry(SleepLog()))
    assert (tmp_path / bench.files[0].relpath).read_bytes() == one_hop.read_bytes()
    assert (tmp_path / bench.files[1].relpath).read_bytes() == inverse.read_bytes()
    assert http_server.hits["/uc"] == 2  # warning page + file, once for both members
    assert manifest["files"][0]["source"].endswith("#editing-data/portability/One Hop/zsre_mend_eval_portability_gpt4.json")
    assert leftovers(tmp_path) == []


def test_google_drive_form_confirmation(http_server, tmp_path: Path) -> None:
    received: list[str] = []

    def download(handler: BaseHTTPRequestHandler, hit: int) -> None:
        received.append(handler.path)
        serve(b"drive file")(handler, hit)

    http_server.routes["/uc"] = drive_form_page
    http_server.routes["/download"] = download
    bench = one_file_benchmark(http_server.url("/uc?export=download&id=abc"), "f.bin", sha256(b"drive file"))
    fetch_files(bench, tmp_path, None, retry=fast_retry(SleepLog()))
    assert (tmp_path / "f.bin").read_bytes() == b"drive file"
    assert received and all(part in received[0] for part in ("id=abc", "confirm=t", "uuid=u-1"))


def test_confirmation_token_is_also_read_from_the_page_link() -> None:
    page = '<a href="/uc?export=download&amp;confirm=Ab-9_x&amp;id=abc">Download anyway</a>'
    url = gdrive.confirmation_url("https://drive.google.com/uc?export=download&id=abc", page, {})
    assert url == "https://drive.google.com/uc?export=download&id=abc&confirm=Ab-9_x"


def test_html_page_without_confirmation_is_an_error(http_server, tmp_path: Path) -> None:
    http_server.routes["/quota"] = serve(b"<html>Too many users have viewed this file</html>", "text/html")
    with pytest.raises(DownloadError, match="HTML page"):
        fetch_files(one_file_benchmark(http_server.url("/quota"), "f.bin", None), tmp_path, None, retry=fast_retry(SleepLog()))
    assert not (tmp_path / "f.bin").exists()


def test_missing_archive_member_is_an_error(http_server, tmp_path: Path) -> None:
    http_server.routes["/bundle.zip"] = serve(zip_of({"a/b.json": b"[]"}), "application/zip")
    bench = one_file_benchmark(http_server.url("/bundle.zip"), "c.json", None, member="a/c.json")
    with pytest.raises(DownloadError, match="a/c.json"):
        fetch_files(bench, tmp_path, None, retry=fast_retry(SleepLog()))
    assert leftovers(tmp_path) == []


# --- the DVC stage entry script -------------------------------------------------------------------


def test_stage_script_fetches_into_data_raw(data_mirror: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    spec = importlib.util.spec_from_file_location("download_stage", REPO_ROOT / "stages" / "download.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.delenv("KEPITFALLS_MIRROR", raising=False)
    monkeypatch.setattr(stage, "PROJECT_ROOT", tmp_path)
    data = config.Data(mirror=str(data_mirror), benchmarks={"sst2": config.Benchmark(include_optional=False)})
    monkeypatch.setattr(stage, "load_sections", lambda sections: load_sections(sections).model_copy(update={"data": data}))
    assert stage.main(["sst2"]) == 0
    assert (tmp_path / "data/raw/sst2/dev.tsv").read_bytes() == (data_mirror / "sst2/dev.tsv").read_bytes()
    assert "mirror:sst2/dev.tsv" in capsys.readouterr().out
