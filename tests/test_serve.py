"""``diffuspeech serve``: the JSON API on the embedded model (a real server on a free port), its
errors, server-sent events, and the page in headless Chromium when one is installed."""

import json
import shutil
import threading
import urllib.error
import urllib.request
import uuid

import pytest

from diffuspeech.cli import main
from diffuspeech.pipeline import Pipeline
from diffuspeech.serve import ServeApp, make_server


@pytest.fixture(scope="module")
def question(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve")
    assert main(["demo", "--seed", "3", "--out-dir", str(out)]) == 0  # a spoken question by an espeak voice
    return out / "question.wav"


@pytest.fixture(scope="module")
def server():
    app = ServeApp(Pipeline.from_pretrained(None), model_name="arith", max_upload_bytes=200_000, max_seconds=10)
    srv = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", app
    srv.shutdown()
    srv.server_close()


def multipart(fields: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = f'Content-Disposition: form-data; name="{name}"; filename="{name}.wav"\r\nContent-Type: audio/wav'
        else:
            head, value = f'Content-Disposition: form-data; name="{name}"', str(value).encode()
        body += f"--{boundary}\r\n{head}\r\n\r\n".encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request(url: str, fields: dict | None = None):
    """``(status, body bytes, content type)``; fields: a multipart POST."""
    if fields is None:
        req = urllib.request.Request(url)
    else:
        data, ctype = multipart(fields)
        req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type")


def test_model_and_page(server):
    base, _ = server
    status, body, ctype = request(base + "/api/model")
    info = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert {"s2s", "s2t", "asr", "tts"} <= set(info["tasks"]) and info["tasks"]["tts"]["inputs"] == [{"field": "answer_words", "modality": "text"}]
    assert "backbone" in info["components"] and "low_confidence" in info["samplers"] and info["generation"]["steps"] > 0
    status, page, ctype = request(base + "/")
    assert status == 200 and b'<script src="/static/app.js">' in page and ctype.startswith("text/html")
    for asset in ("app.js", "style.css"):
        assert request(base + f"/static/{asset}")[0] == 200
    assert b"https://" not in page and b"https://" not in request(base + "/static/app.js")[1]


def test_generate_answers_a_spoken_question(server, question):
    base, _ = server
    status, body, _ = request(base + "/api/generate", {"task": "s2s", "audio": question.read_bytes(), "steps": "8"})
    out = json.loads(body)
    assert status == 200, out
    assert out["thinking"] and out["text"] and out["audio_url"].startswith("/api/audio/")
    t = out["trajectory"]
    assert len(t["revealed"]) == len(t["modality"]) == len(t["target"]) and {"text", "speech"} <= set(t["modality"])
    assert max(t["revealed"]) >= 0 and all(r == -1 for r, tg in zip(t["revealed"], t["target"]) if not tg)
    status, wav, ctype = request(base + out["audio_url"])
    assert status == 200 and ctype == "audio/wav" and wav[:4] == b"RIFF" and len(wav) > 1000
    status, body, _ = request(base + "/api/generate", {"task": "tts", "text": "seven", "sampler": "random", "kv_cache": "none"})
    assert status == 200 and json.loads(body)["audio_url"]


@pytest.mark.parametrize("fields,status,message", [
    ({"task": "s2s"}, 422, "audio: task 's2s' takes speech"),
    ({"task": "nope", "audio": b"x"}, 422, "task: 'nope' is not a task of this model; choose one of: "),
    ({"task": "s2s", "audio": b"not a wav file at all"}, 422, "audio: "),
    ({"task": "s2s", "audio": b"\0" * 300_000}, 413, "byte limit"),
    ({"task": "tts"}, 422, "text: task 'tts' takes text"),
    ({"task": "tts", "text": "one", "steps": "many"}, 422, "steps: expected int"),
    ({"task": "tts", "text": "one", "sampler": "oracle"}, 422, "sampler: unknown sampler 'oracle'; choose one of:"),
    ({"task": "tts", "text": "one", "kv_cache": "huge"}, 422, "kv_cache"),
])
def test_bad_requests_get_a_4xx_json_error(server, fields, status, message):
    base, _ = server
    got, body, ctype = request(base + "/api/generate", fields)
    assert got == status and ctype == "application/json" and message in json.loads(body)["error"]


def test_too_long_and_empty_audio(server, tmp_path):
    import torch

    from diffuspeech.audio import write_audio

    base, _ = server
    write_audio(tmp_path / "long.wav", torch.zeros(8000 * 11), 8000)  # 176 kB: under the byte limit, over the duration limit
    import soundfile as sf

    sf.write(tmp_path / "empty.wav", torch.zeros(0).numpy(), 16000)  # a valid header, no samples
    got, body, _ = request(base + "/api/generate", {"task": "s2t", "audio": (tmp_path / "long.wav").read_bytes()})
    assert got == 413 and "11.0 s is longer than the 10 s this server accepts" in json.loads(body)["error"]
    got, body, _ = request(base + "/api/generate", {"task": "s2t", "audio": (tmp_path / "empty.wav").read_bytes()})
    assert got == 422 and "audio: " in json.loads(body)["error"]


def test_unknown_paths_and_non_multipart(server):
    base, _ = server
    assert request(base + "/api/nothing")[0] == 404 and request(base + "/static/../app.py")[0] == 404
    req = urllib.request.Request(base + "/api/generate", data=b'{"task": "s2s"}', headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 415 and "multipart/form-data" in json.loads(err.value.read())["error"]


def test_stream_sends_chunks_then_done(server, question):
    base, _ = server
    data, ctype = multipart({"task": "s2s", "audio": question.read_bytes(), "steps": "8", "block_length": "8"})
    req = urllib.request.Request(base + "/api/stream", data=data, headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers.get("Content-Type") == "text/event-stream"
        events = [json.loads(line[6:]) for line in r.read().decode().splitlines() if line.startswith("data: ")]
    kinds = [e["kind"] for e in events]
    assert kinds[-1] == "done" and "text" in kinds and "audio" in kinds and events[-1]["thinking"]


def test_one_generation_at_a_time(server, question):
    base, app = server
    results = []
    threads = [threading.Thread(target=lambda: results.append(request(base + "/api/generate", {"task": "tts", "text": "two"})[0]))
               for _ in range(3)]
    with app.lock:  # hold the model: every request must wait, none fails
        for t in threads:
            t.start()
        threads[0].join(timeout=1.0)
        assert not results
    for t in threads:
        t.join(timeout=120)
    assert results == [200, 200, 200]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_page_in_headless_chromium(server, question, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    base, _ = server
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",  # a fake microphone (a beep)
        ])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(base + "/")
        page.wait_for_function("document.querySelector('#task').options.length > 0")
        page.select_option("#task", "s2s")
        page.set_input_files("#audio-file", str(question))
        page.click("#go")
        page.wait_for_function("document.querySelector('#text-answer').textContent.length > 0", timeout=120_000)
        assert page.text_content("#thinking").strip() and page.text_content("#text-answer").strip() != "(none)"
        src = page.get_attribute("#answer-audio", "src")
        assert src and src.startswith("/api/audio/")
        assert page.evaluate("fetch(document.querySelector('#answer-audio').src).then(r => r.headers.get('content-type'))") == "audio/wav"
        page.wait_for_function("Number(document.querySelector('#trajectory').dataset.frame) >= Number(document.querySelector('#frame').max)")
        assert int(page.get_attribute("#trajectory", "data-cells")) > 10
        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
        # the microphone: record a second, then ask with the recording
        page.set_input_files("#audio-file", [])
        page.click("#record")
        page.wait_for_timeout(1200)
        page.click("#record")
        page.wait_for_function("document.querySelector('#rec-status').textContent.includes('s recorded')")
        page.evaluate("document.querySelector('#text-answer').textContent = ''")
        page.click("#go")
        page.wait_for_function("document.querySelector('#text-answer').textContent.length > 0", timeout=120_000)
        # a bad upload shows the server's message on the page
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"not audio")
        page.set_input_files("#audio-file", str(bad))
        page.click("#go")
        page.wait_for_selector("#error:not([hidden])")
        assert "audio:" in page.text_content("#error")
        browser.close()
    assert (tmp_path / "serve.png").stat().st_size > 5000
