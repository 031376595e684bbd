// Progressive enhancement of the upload form: drag-and-drop, a preview, and the result shown in
// place via the JSON API. Without JavaScript the form posts to "/" and the server renders the result.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form || !window.fetch || !window.FormData) return;
  const input = document.getElementById("image");
  const dropZone = document.getElementById("drop-zone");
  const preview = document.getElementById("preview");
  const errorBox = document.getElementById("js-error");
  const slot = document.getElementById("result-slot");
  const submit = document.getElementById("submit");
  let previewUrl = null;

  function showError(message) {
    errorBox.textContent = message;
    errorBox.classList.remove("d-none");
  }

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.classList.remove("d-none");
  }

  input.addEventListener("change", function () {
    if (input.files.length) showPreview(input.files[0]);
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
      showPreview(input.files[0]);
    }
  });

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function percent(p) { return (p * 100).toFixed(1) + "%"; }

  function renderResult(body) {
    const card = element("div", "card shadow-sm");
    card.id = "result";
    const cardBody = element("div", "card-body");
    const title = element("h2", "h4 card-title", "Most likely: ");
    const top = element("span", "", body.top_class);
    top.id = "top-class";
    title.appendChild(top);
    cardBody.appendChild(title);

    const risk = element("p", "mb-1", "Risk group of that class: ");
    const badge = element("span", "badge risk-" + body.risk_group, body.risk_group);
    badge.id = "risk-group";
    risk.appendChild(badge);
    cardBody.appendChild(risk);

    const melanoma = element("p", "mb-1", "Melanoma probability: ");
    const melanomaValue = element("strong", "", percent(body.melanoma_probability));
    melanomaValue.id = "melanoma-probability";
    melanoma.appendChild(melanomaValue);
    cardBody.appendChild(melanoma);

    const groups = element("p", "mb-3", "Grouped risk: ");
    Object.entries(body.risk_probabilities).forEach(function ([group, p]) {
      groups.appendChild(element("span", "me-2", group + " " + (p * 100).toFixed(0) + "%"));
    });
    cardBody.appendChild(groups);
    if (body.malignant_flag) {
      const flag = element("div", "alert alert-danger", "The model puts this photo in the range where it " +
        "flags possibly malignant lesions. Please show this lesion to a doctor soon.");
      flag.id = "malignant-flag";
      cardBody.appendChild(flag);
    }

    const row = element("div", "row g-3");
    const left = element("div", "col-12 col-md-6");
    const figure = element("figure", "figure w-100");
    const heat = element("img", "img-fluid rounded w-100");
    heat.id = "heatmap";
    heat.alt = "Heat map over the photo";
    heat.src = "data:image/png;base64," + body.heatmap_png_base64;
    figure.appendChild(heat);
    figure.appendChild(element("figcaption", "figure-caption",
      "Heat map: warmer regions drove the prediction of \u201c" + body.top_class + "\u201d most."));
    left.appendChild(figure);
    row.appendChild(left);

    const right = element("div", "col-12 col-md-6");
    const table = element("table", "table table-sm align-middle");
    table.id = "class-probabilities";
    const tbody = element("tbody");
    Object.entries(body.probabilities).sort(function (a, b) { return b[1] - a[1]; })
      .forEach(function ([name, p]) {
        const tr = element("tr", "class-row");
        tr.dataset.class = name;
        tr.appendChild(element("td", "class-name", name));
        const barCell = element("td", "w-50");
        const bar = element("progress", "w-100");
        bar.max = 1;
        bar.value = p;
        barCell.appendChild(bar);
        tr.appendChild(barCell);
        tr.appendChild(element("td", "text-end probability", percent(p)));
        tbody.appendChild(tr);
      });
    table.appendChild(tbody);
    right.appendChild(table);
    right.appendChild(element("p", "small text-muted", "Model " + body.model.name + " " +
      body.model.version + ", inference " + body.inference_ms.toFixed(1) + " ms."));
    row.appendChild(right);
    cardBody.appendChild(row);
    card.appendChild(cardBody);
    slot.replaceChildren(card);
    card.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    errorBox.classList.add("d-none");
    if (!input.files.length) { showError("Choose a photo of the skin lesion first."); return; }
    submit.disabled = true;
    submit.textContent = "Analysing\u2026";
    try {
      const data = new FormData();
      data.append("image", input.files[0]);
      const response = await fetch("/api/v1/predict?heatmap=true", {
        method: "POST", body: data, headers: { Accept: "application/json" },
      });
      const body = await response.json().catch(function () { return null; });
      if (!response.ok) {
        showError(body && body.error ? body.error.message : "The server could not analyse this file.");
        slot.replaceChildren();
      } else {
        renderResult(body);
      }
    } catch (err) {
      showError("The photo could not be sent. Check your connection and try again.");
    } finally {
      submit.disabled = false;
      submit.textContent = "Analyse the photo";
    }
  });
})();
