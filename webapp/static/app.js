// Progressive enhancement of the upload form. Without JavaScript the form posts to "/" and the server
// renders the result page. With it: drag-and-drop, a preview, the photo shrunk in the browser before
// upload (upright, as EXIF says), a real progress bar, and the result shown in place. The result is the
// server's own rendering (POST /result returns the same template as the form post), never rebuilt here.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form || !window.FormData || !window.XMLHttpRequest) return;
  const input = document.getElementById("image");
  const dropZone = document.getElementById("drop-zone");
  const preview = document.getElementById("preview");
  const slot = document.getElementById("result-slot");
  const submit = document.getElementById("submit");
  const status = document.getElementById("status");
  const progressBox = document.getElementById("progress-box");
  const progress = document.getElementById("upload-progress");
  const maxSide = Number(form.dataset.maxSide) || 1280;
  let previewUrl = null;
  let busy = false;

  // One place that sets what the person sees: idle, sending (with %), analysing, done, error, offline.
  function setState(state, text, percent) {
    form.dataset.state = state;
    status.textContent = text || "";
    const working = state === "sending" || state === "analysing";
    progressBox.classList.toggle("d-none", !working);
    if (state === "sending") progress.value = percent || 0;
    if (state === "analysing") progress.removeAttribute("value"); // indeterminate: the server is working
    submit.disabled = working;
    submit.textContent = { sending: "Sending\u2026", analysing: "Analysing\u2026" }[state] || "Analyse the photo";
    busy = working;
  }

  function clearResult() {
    slot.replaceChildren();
    const served = document.getElementById("problem"); // a form post's error, above the form
    if (served) served.remove();
  }

  function choose(file) {
    clearResult(); // a new photo never sits above an old answer
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.classList.remove("d-none");
    setState("ready", "");
  }

  input.addEventListener("change", function () {
    if (input.files.length) choose(input.files[0]);
  });
  ["dragenter", "dragover"].forEach(function (name) {
    dropZone.addEventListener(name, function (event) {
      event.preventDefault();
      dropZone.classList.add("drag-over");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    dropZone.addEventListener(name, function () { dropZone.classList.remove("drag-over"); });
  });
  dropZone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      choose(input.files[0]);
    }
  });

  // Shrink a large photo to maxSide on its longest side as JPEG. createImageBitmap applies the EXIF
  // orientation, so the pixels sent are upright. Anything the browser cannot decode goes unchanged, so
  // that the server gives its own clear answer about it.
  async function shrink(file) {
    if (!window.createImageBitmap || !file.type.startsWith("image/")) return file;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (err) {
      return file;
    }
    const scale = maxSide / Math.max(bitmap.width, bitmap.height);
    if (scale >= 1) { bitmap.close(); return file; }
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    const context = canvas.getContext("2d");
    // A JPEG has no transparency: put it over white, as the server does with a transparent upload
    // (model.preprocessing), so that the page and the API judge the same picture.
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    const blob = await new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", 0.92); });
    return blob && blob.size < file.size ? new File([blob], "photo.jpg", { type: "image/jpeg" }) : file;
  }

  // Put the server's fragment in place, move focus to its heading, and say it in the live region.
  function show(html, prefix) {
    const template = document.createElement("template");
    template.innerHTML = html;
    slot.replaceChildren(template.content);
    const heading = slot.querySelector("h2");
    if (heading) {
      heading.focus({ preventScroll: true });
      heading.scrollIntoView({ block: "start" });
    }
    status.textContent = (prefix || "") + (heading ? heading.textContent : "");
  }

  function send(file) {
    const data = new FormData();
    data.append("image", file, file.name || "photo.jpg");
    const request = new XMLHttpRequest();
    request.open("POST", form.dataset.fragmentUrl);
    request.setRequestHeader("Accept", "text/html");
    request.timeout = 120000;
    request.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        const percent = Math.round((event.loaded / event.total) * 100);
        setState("sending", "Sending the photo: " + percent + "%", percent);
      }
    });
    request.upload.addEventListener("load", function () {
      setState("analysing", "Photo sent. Analysing\u2026");
    });
    request.addEventListener("load", function () {
      const ok = request.status === 200;
      const isFragment = (request.getResponseHeader("Content-Type") || "").startsWith("text/html");
      if (isFragment && request.responseText) {
        setState(ok ? "done" : "error", "");
        show(request.responseText, ok ? "Result ready: " : "Not analysed: ");
      } else {
        failed("The server could not analyse this photo (error " + request.status + "). Please try again.");
      }
    });
    request.addEventListener("error", function () {
      if (navigator.onLine === false) {
        failed("You seem to be offline. Check your connection, then press \u201cAnalyse the photo\u201d again.",
          "offline");
      } else {
        failed("The photo could not be sent. Check your connection and try again.", "offline");
      }
    });
    request.addEventListener("timeout", function () {
      failed("The server took too long to answer. Please try again.");
    });
    setState("sending", "Sending the photo: 0%", 0);
    request.send(data);
  }

  // A failure the server could not describe: its own state, in the result slot, focused and announced.
  function failed(message, state) {
    setState(state || "error", "");
    const box = document.createElement("section");
    box.className = "card border-danger mb-3";
    box.id = "problem";
    box.dataset.code = state || "error";
    const body = document.createElement("div");
    body.className = "card-body";
    const heading = document.createElement("h2");
    heading.className = "h4";
    heading.tabIndex = -1;
    heading.textContent = state === "offline" ? "No connection" : "Something went wrong";
    const text = document.createElement("p");
    text.id = "error";
    text.className = "mb-0";
    text.textContent = message;
    body.append(heading, text);
    box.append(body);
    slot.replaceChildren(box);
    heading.focus({ preventScroll: true });
    heading.scrollIntoView({ block: "start" });
    status.textContent = "Not analysed: " + heading.textContent; // the detail is in the card below
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (busy) return;
    if (!input.files.length) {
      failed("Choose a photo of the skin lesion first.", "error");
      input.focus();
      return;
    }
    clearResult();
    setState("sending", "Preparing the photo\u2026", 0);
    send(await shrink(input.files[0]));
  });
})();
