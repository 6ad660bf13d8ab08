// Docnum admin portal: the live format preview and the copy button. Everything else works
// without JavaScript. Text from the server is only ever set with textContent.
"use strict";

(function () {
  var PREVIEW_FIELDS = [
    "name", "format", "effective_from", "reset", "fiscal_year_start", "timezone", "start", "step",
    "max_value", "shared_counter",
  ];

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function debounce(run, wait) {
    var timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(run, wait);
    };
  }

  function pairs(variables) {
    return Object.keys(variables).sort().map(function (name) {
      return name + "=" + variables[name];
    }).join(", ");
  }

  function showPreview(output, data, format) {
    output.replaceChildren();
    var fields = Object.keys(data.errors || {});
    if (fields.length) {
      fields.forEach(function (field) {
        var line = element("div", "preview-line");
        var label = (field || "format").replace(/_/g, " ");
        line.append(element("span", "preview-label", label.charAt(0).toUpperCase() + label.slice(1)));
        line.append(element("span", "preview-error", data.errors[field]));
        output.append(line);
      });
      return;
    }
    if (data.verdict) {
      var verdict = element("div", "preview-line");
      verdict.append(element("span", "preview-label", "New format"));
      verdict.append(element("span", "preview-ok", data.verdict));
      output.append(verdict);
    }
    data.samples.forEach(function (sample, index) {
      var line = element("div", "preview-line");
      var counter = "period " + sample.period;
      if (sample.variables && Object.keys(sample.variables).length) {
        counter += ", " + pairs(sample.variables);
      }
      var label = (index === 0 ? "Today, " : "On ") + sample.date + " (" + counter + ")";
      if (sample.format !== format) label += ", format " + sample.format;
      line.append(element("span", "preview-label", label));
      if (sample.number !== undefined) {
        line.append(element("span", "preview-number", sample.number));
      } else {
        line.append(element("span", "preview-error", sample.error));
      }
      output.append(line);
    });
  }

  function setUpPreview(form) {
    var output = document.getElementById("preview-output");
    var date = document.getElementById("preview-date");
    var variables = document.getElementById("preview-variables");
    if (!output) return;
    var latest = 0;

    function refresh() {
      var params = new URLSearchParams();
      PREVIEW_FIELDS.forEach(function (name) {
        var input = form.elements.namedItem(name);
        if (input && !input.disabled) params.set(name, input.value);
      });
      if (form.dataset.series) params.set("series", form.dataset.series);
      if (date && date.value) params.set("date", date.value);
      if (variables && variables.value) params.set("variables", variables.value);
      var ticket = ++latest;
      fetch(form.dataset.preview + "?" + params.toString(), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      })
        .then(function (response) {
          if (response.status === 401) throw new Error("Your session has ended: sign in again.");
          if (!response.ok) throw new Error("The preview is not available right now.");
          return response.json();
        })
        .then(function (data) {
          if (ticket === latest) showPreview(output, data, params.get("format"));
        })
        .catch(function (error) {
          if (ticket !== latest) return;
          output.replaceChildren(element("span", "preview-error", error.message));
        });
    }

    var later = debounce(refresh, 250);
    form.addEventListener("input", later);
    form.addEventListener("change", later);
    refresh();
  }

  function setUpCopy(button) {
    var status = document.getElementById("copy-status");
    button.addEventListener("click", function () {
      var source = document.getElementById(button.dataset.copy);
      if (!source) return;
      function report(copied) {
        if (!copied) source.select();
        if (status) {
          status.textContent = copied
            ? "The key is on your clipboard."
            : "Press Ctrl+C (or \u2318C) to copy the selected key.";
        }
        if (copied) button.textContent = "Copied";
      }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(source.value).then(
          function () { report(true); },
          function () { report(false); }
        );
      } else {
        source.select();
        report(Boolean(document.execCommand && document.execCommand("copy")));
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-preview]").forEach(setUpPreview);
    document.querySelectorAll("button[data-copy]").forEach(setUpCopy);
  });
})();
