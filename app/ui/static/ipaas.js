// Copy buttons for the webhook URL and curl line: shown only when this script runs (without it the
// text is still selectable). Clipboard API first (secure contexts: https and 127.0.0.1), then the old way.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.querySelector(button.dataset.copy);
    if (!source) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 2000); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(source.value).then(done, function () { source.select(); });
      } else {
        source.select();
        if (document.execCommand("copy")) done();
      }
    });
  });
});
