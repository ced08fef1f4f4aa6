// Asks the wasm API beside this page and shows its answer.
fetch("/hello")
  .then((response) => response.text())
  .then((text) => {
    document.getElementById("hello").textContent = text;
  });
