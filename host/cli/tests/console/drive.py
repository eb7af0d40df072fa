#!/usr/bin/env python3
"""Drives the web console in headless Chromium (Debian's chromium + chromedriver, selenium
from PyPI): sends a chat and sees its tokens arrive in several pieces, sees the dashboard's
numbers change after a request, reads the plan and reloads plugins with the admin key.
Saves a screenshot of each tab under --out. Exits non-zero on the first failed check.

    python3 drive.py --url http://127.0.0.1:8000 --out /tmp/shots --admin-key KEY
"""
import argparse
import pathlib
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

# Chromium's background services try the network at start; this machine's network is closed.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


def wait(what, cond, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception:  # the element may not exist yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def text(d, id_):
    return d.find_element(By.ID, id_).text


def chat(d, out):
    d.find_element(By.ID, "tab-chat").click()
    wait("the model list", lambda: d.find_elements(By.CSS_SELECTOR, "#model-select option"))
    # Record the assistant message's length at every DOM change: streaming shows as several
    # growing lengths before the last one.
    d.execute_script("""
        window.__lens = [];
        new MutationObserver(() => {
          const m = document.querySelectorAll('#messages .msg.assistant .content');
          if (m.length) window.__lens.push(m[m.length - 1].textContent.length);
        }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
    """)
    for id_, v in [("max-tokens", "120"), ("temperature", "0"), ("seed", "7")]:
        el = d.find_element(By.ID, id_)
        el.clear()
        el.send_keys(v)
    d.find_element(By.ID, "logprobs").click()
    d.find_element(By.ID, "chat-input").send_keys("Tell me about latent attention.")
    d.find_element(By.ID, "chat-send").click()
    wait("the reply to finish", lambda: "tokens in" in text(d, "chat-status"), 60)
    lens = d.execute_script("return window.__lens")
    final = lens[-1] if lens else 0
    partial = sorted({n for n in lens if 0 < n < final})
    print(f"chat: final reply {final} chars, {len(partial)} partial lengths seen while streaming")
    assert final > 0, "the reply is empty"
    # Rendered in one task, a reply shows only its final length: a partial one means it
    # arrived and was drawn in pieces.
    assert partial, f"the reply did not stream in pieces: lengths {lens}"
    toks = d.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant .tok")
    assert toks, "logprobs were asked for but no token spans were drawn"
    toks[0].click()
    wait("the logprob alternatives", lambda: d.find_elements(By.CSS_SELECTOR, "#logprob-detail table tr"))
    d.save_screenshot(str(out / "chat.png"))


def dashboard(d, out):
    d.find_element(By.ID, "tab-dashboard").click()
    number = lambda id_: float(text(d, id_)) if text(d, id_) not in ("", "–") else None
    before = wait("the dashboard's first poll", lambda: number("stat-gen-tokens") is not None and number("stat-gen-tokens"))
    finished = number("stat-finished")
    d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/v1/completions', {method: 'POST', headers: {'content-type': 'application/json'},
          body: JSON.stringify({prompt: 'The dashboard should see this', max_tokens: 24, temperature: 0, ignore_eos: true})})
          .then(r => r.json()).then(done, e => done(String(e)));
    """)
    after = wait("the generated-token count to grow", lambda: (number("stat-gen-tokens") or 0) > before and number("stat-gen-tokens"))
    wait("the finished count to grow", lambda: number("stat-finished") > finished)
    wait("a TTFT percentile", lambda: text(d, "stat-ttft") not in ("– / –", ""))
    rows = d.find_elements(By.CSS_SELECTOR, "#replicas tbody tr")
    assert rows, "no replica rows"
    print(f"dashboard: generated tokens {before:.0f} -> {after:.0f}, TTFT {text(d, 'stat-ttft')}, {len(rows)} replica row(s)")
    time.sleep(1.2)  # one more poll, so the charts have two points
    d.save_screenshot(str(out / "dashboard.png"))


def plan(d, out):
    d.find_element(By.ID, "tab-plan").click()
    wait("the plan", lambda: "MLA stored" in text(d, "plan-out"))
    el = d.find_element(By.ID, "plan-context")
    el.clear()
    el.send_keys("64")
    d.find_element(By.ID, "plan-run").click()
    wait("the plan for 64 tokens", lambda: "One sequence of 64 tokens" in text(d, "plan-out"))
    d.save_screenshot(str(out / "plan.png"))


def plugins(d, out, admin_key):
    d.find_element(By.ID, "tab-plugins").click()
    key = d.find_element(By.ID, "admin-key")
    key.send_keys("not-the-key")
    d.find_element(By.ID, "plugins-reload").click()
    wait("the wrong key refused", lambda: "refused" in text(d, "reload-result"))
    key.clear()
    key.send_keys(admin_key)
    d.find_element(By.ID, "plugins-reload").click()
    wait("the reload answer", lambda: "no plugins" in text(d, "reload-result") or "reloaded" in text(d, "reload-result"))
    d.save_screenshot(str(out / "plugins.png"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--admin-key", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = a.chromium
    profile = tempfile.mkdtemp(prefix="mlahost-console-")
    for f in FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(f)
    d = webdriver.Chrome(options=opts, service=Service(executable_path=a.chromedriver))
    try:
        d.set_script_timeout(60)
        d.get(a.url + "/")
        wait("the health pill", lambda: text(d, "health") == "ready")
        chat(d, out)
        dashboard(d, out)
        plan(d, out)
        plugins(d, out, a.admin_key)
        # Refused requests (the wrong admin key's 401) are logged too; script errors are not those.
        errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE" and "Failed to load resource" not in e.get("message", "")]
        assert not errors, f"console errors: {errors}"
    except Exception:
        d.save_screenshot(str(out / "failure.png"))
        raise
    finally:
        d.quit()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
