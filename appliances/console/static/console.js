// Launcher for one console session: the token comes from this page's URL, the
// websocket goes back to the proxy that served the page. noVNC is vendored at
// build time into ./novnc (see the Makefile's novnc target).
const params = new URLSearchParams(window.location.search);
const token = params.get("token");
// The token is one-time and short-lived; keep it out of the history and the address bar.
window.history.replaceState(null, "", window.location.pathname);

const statusEl = document.getElementById("status");
const cad = document.getElementById("cad");
const state = { state: "loading", reason: null, rfb: null };
window.skiffConsole = state; // read by the tests

function show(text, next) {
  statusEl.textContent = text;
  if (next) state.state = next;
}

async function main() {
  if (!token) {
    show("This address carries no console token; ask for a new console link.", "failed");
    return;
  }
  let RFB;
  try {
    RFB = (await import("./novnc/core/rfb.js")).default;
  } catch (err) {
    show("noVNC is not installed on this console proxy.", "failed");
    state.reason = String(err);
    return;
  }
  const url = new URL("websockify", window.location.href);
  url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "?token=" + encodeURIComponent(token);
  show("Connecting\u2026", "connecting");
  const rfb = new RFB(document.getElementById("screen"), url.href, { shared: true });
  state.rfb = rfb;
  rfb.scaleViewport = true;
  rfb.background = "#111";
  rfb.addEventListener("connect", () => {
    show("Connected", "connected");
    cad.disabled = false;
  });
  rfb.addEventListener("disconnect", (e) => {
    cad.disabled = true;
    state.reason = e.detail.clean ? "clean" : "error";
    show(e.detail.clean ? "The console session has ended."
      : "The console could not be reached, or the link was used or has expired.",
      "disconnected");
  });
  rfb.addEventListener("credentialsrequired", () => {
    const password = window.prompt("VNC password");
    if (password !== null) rfb.sendCredentials({ password });
  });
  rfb.addEventListener("desktopname", (e) => { document.title = e.detail.name; });
  cad.addEventListener("click", () => rfb.sendCtrlAltDel());
}

main();
