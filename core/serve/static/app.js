// diffuspeech serve: ask the model, play the answer, watch the canvas fill step by step.
"use strict";
const $ = (id) => document.getElementById(id);
let model = null, recorded = null, result = null;

async function loadModel() {
  const r = await fetch("/api/model");
  model = await r.json();
  $("model-name").textContent = `model: ${model.model}`;
  for (const name of Object.keys(model.tasks)) $("task").add(new Option(name, name));
  for (const name of model.samplers) $("sampler").add(new Option(name, name, false, name === model.sampler));
  const g = model.generation;
  $("steps").value = g.steps; $("temperature").value = g.temperature; $("kv_cache").value = g.kv_cache;
  if (g.block_length) $("block_length").value = g.block_length;
  const preferred = ["s2s", "s2t", "asr", "tts"].find((t) => t in model.tasks);
  if (preferred) $("task").value = preferred;
  showInputs();
}

function showInputs() {
  const inputs = model.tasks[$("task").value].inputs;
  $("speech-input").hidden = !inputs.some((i) => i.modality.startsWith("speech"));
  $("text-input").hidden = !inputs.some((i) => i.modality === "text");
}

// ---- microphone: 16-bit mono WAV encoded here, so the server reads it like any wav file
let recorder = null;
async function toggleRecord() {
  if (recorder) { recorder.stop(); return; }
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); }
  catch (e) { return showError(`microphone: ${e.message}`); }
  const ctx = new AudioContext();
  const source = ctx.createMediaStreamSource(stream);
  const node = ctx.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
  source.connect(node); node.connect(ctx.destination);
  $("record").textContent = "Stop"; $("record").classList.add("recording"); $("rec-status").textContent = "recording...";
  recorder = { stop() {
    node.disconnect(); source.disconnect(); stream.getTracks().forEach((t) => t.stop());
    recorded = new Blob([wavBytes(chunks, ctx.sampleRate)], { type: "audio/wav" });
    ctx.close(); recorder = null;
    $("record").textContent = "Record"; $("record").classList.remove("recording");
    $("rec-status").textContent = `${(recorded.size / 2 / ctx.sampleRate).toFixed(1)} s recorded`;
    $("audio-file").value = ""; setQuestionAudio(recorded);
  } };
}

function wavBytes(chunks, rate) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const buf = new ArrayBuffer(44 + 2 * n), v = new DataView(buf);
  const str = (o, s) => [...s].forEach((ch, i) => v.setUint8(o + i, ch.charCodeAt(0)));
  str(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); str(8, "WAVEfmt "); v.setUint32(16, 16, true);
  v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, rate, true); v.setUint32(28, 2 * rate, true);
  v.setUint16(32, 2, true); v.setUint16(34, 16, true); str(36, "data"); v.setUint32(40, 2 * n, true);
  let o = 44;
  for (const c of chunks) for (const x of c) { v.setInt16(o, Math.max(-1, Math.min(1, x)) * 32767, true); o += 2; }
  return buf;
}

function setQuestionAudio(blob) { const a = $("question-audio"); a.src = URL.createObjectURL(blob); a.hidden = false; }

// ---- generate
function showError(msg) { $("error").textContent = msg; $("error").hidden = false; }

async function generate() {
  $("error").hidden = true;
  const form = new FormData();
  form.append("task", $("task").value);
  if (!$("speech-input").hidden) {
    const file = $("audio-file").files[0] || recorded;
    if (!file) return showError("record a question or upload a wav file first");
    form.append("audio", file, "question.wav");
  }
  if (!$("text-input").hidden) form.append("text", $("text").value);
  for (const k of ["steps", "block_length", "temperature", "kv_cache", "sampler"]) if ($(k).value !== "") form.append(k, $(k).value);
  $("go").disabled = true; $("go").textContent = "Denoising...";
  try {
    const r = await fetch("/api/generate", { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) return showError(body.error || `error ${r.status}`);
    show(body);
  } catch (e) { showError(`request failed: ${e.message}`); }
  finally { $("go").disabled = false; $("go").textContent = "Generate"; }
}

function show(out) {
  result = out;
  $("answer").hidden = false;
  $("thinking").textContent = out.thinking ?? "(none)";
  $("text-answer").textContent = out.text ?? "(none)";
  const a = $("answer-audio");
  if (out.audio_url) { a.src = out.audio_url; a.hidden = false; } else { a.removeAttribute("src"); a.hidden = true; }
  $("meta").textContent = `${out.steps} steps, ${out.forward_passes} forward passes, ${out.seconds.toFixed(2)} s`;
  $("warnings").textContent = (out.warnings || []).join(" ");
  const t = out.trajectory;
  $("frame").max = t ? t.steps : 0;
  animate();
}

// ---- the trajectory: one cell per canvas position, coloured when it is revealed
function draw(frame) {
  const t = result && result.trajectory, c = $("trajectory"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (!t) return;
  const n = t.revealed.length, perRow = Math.min(n, 60), rows = Math.ceil(n / perRow);
  const w = c.width / perRow, h = Math.min(30, (c.height - 4) / rows);
  for (let i = 0; i < n; i++) {
    const step = t.revealed[i], x = (i % perRow) * w, y = Math.floor(i / perRow) * h;
    let colour = "#bdc3c7";  // given (condition, task and segment tokens)
    if (t.target[i]) colour = step >= 0 && step < frame ? (t.modality[i] === "speech" ? "#e67e22" : "#2e86de") : "#ecf0f1";
    g.fillStyle = colour; g.fillRect(x + 1, y + 1, w - 2, h - 2);
  }
  c.dataset.frame = frame; c.dataset.cells = n;
  $("frame").value = frame; $("frame-label").textContent = `step ${frame} / ${t.steps}`;
}

let timer = null;
function animate() {
  clearInterval(timer);
  let frame = 0;
  const last = result.trajectory ? result.trajectory.steps : 0;
  draw(0);
  timer = setInterval(() => { frame += 1; draw(frame); if (frame >= last) clearInterval(timer); }, Math.max(40, 1500 / Math.max(1, last)));
}

$("task").addEventListener("change", showInputs);
$("record").addEventListener("click", toggleRecord);
$("audio-file").addEventListener("change", () => { recorded = null; if ($("audio-file").files[0]) setQuestionAudio($("audio-file").files[0]); });
$("go").addEventListener("click", generate);
$("frame").addEventListener("input", () => { clearInterval(timer); draw(Number($("frame").value)); });
loadModel().catch((e) => showError(`cannot load the model description: ${e.message}`));
