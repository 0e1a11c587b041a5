// Progressive enhancement only: every action also works with JavaScript off.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
});
document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
// The date field is always in the page (so it works without JavaScript); with JavaScript it
// only shows while "On a date…" is chosen.
function syncExpireDate() {
  const choice = document.getElementById("expiration");
  const date = document.getElementById("expire-date");
  if (choice && date) date.hidden = choice.value !== "date";
}
document.addEventListener("DOMContentLoaded", syncExpireDate);
document.addEventListener("change", (event) => {
  if (event.target.matches("[data-autosubmit]")) event.target.form.submit();
  if (event.target.name === "expiration") syncExpireDate();
});
