//! Drives a headless Chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! the browser reads commands from its descriptor 3 and writes answers and events to its
//! descriptor 4, each message JSON ended by a NUL byte). A shell maps the child's standard
//! input and output onto those descriptors, so no extra crate or unsafe code is needed.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The browser's program name.
pub const CHROMIUM: &str = "chromium";

/// Whether a browser can be started here.
pub fn available() -> bool {
    Command::new(CHROMIUM)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running browser with one page, attached.
pub struct Browser {
    child: Child,
    commands: ChildStdin,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts a headless browser with a fresh profile and opens a blank page.
    pub fn start() -> anyhow::Result<Browser> {
        let profile = std::env::temp_dir().join(format!(
            "odb-inspector-chromium-{}-{:016x}",
            std::process::id(),
            rand_seed()
        ));
        std::fs::create_dir_all(&profile)?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let commands = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no pipe to the browser"))?;
        let output = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no pipe from the browser"))?;
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(output);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop();
                if let Ok(value) = serde_json::from_slice::<Value>(&message) {
                    if tx.send(value).is_err() {
                        break;
                    }
                }
                message.clear();
            }
        });
        let mut browser = Browser {
            child,
            commands,
            messages,
            next_id: 1,
            session: String::new(),
            profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"].clone();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session in {attached}"))?
            .to_string();
        browser.call("Page.enable", json!({}))?;
        browser.call("Runtime.enable", json!({}))?;
        Ok(browser)
    }

    /// Sends a command (to the page once attached) and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message)?;
        bytes.push(0);
        self.commands.write_all(&bytes)?;
        self.commands.flush()?;
        let deadline = Instant::now() + crate::support::WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .messages
                .recv_timeout(left)
                .map_err(|e| anyhow::anyhow!("no answer to {method}: {e}"))?;
            if answer["id"] == json!(id) {
                if let Some(error) = answer.get("error") {
                    anyhow::bail!("{method} failed: {error}");
                }
                return Ok(answer["result"].clone());
            }
        }
    }

    /// Loads an address in the page.
    pub fn navigate(&mut self, url: &str) -> anyhow::Result<()> {
        let answer = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(error) = answer.get("errorText") {
            anyhow::bail!("cannot load {url}: {error}");
        }
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page; returns its value.
    pub fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let answer = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )?;
        if let Some(exception) = answer.get("exceptionDetails") {
            anyhow::bail!("{expression} threw: {exception}");
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Evaluates `expression` until it is `true`, for at most [`crate::support::WAIT`]; then
    /// fails with the page's text.
    pub fn wait_for(&mut self, what: &str, expression: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + crate::support::WAIT;
        loop {
            // A page being replaced by another may not answer; that is retried.
            if let Ok(Value::Bool(true)) = self.eval(expression) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let text = self.text().unwrap_or_default();
                anyhow::bail!("timed out waiting for {what}; the page reads:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The text of the page's body.
    pub fn text(&mut self) -> anyhow::Result<String> {
        let value = self.eval("document.body ? document.body.innerText : ''")?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    /// Saves a PNG image of the page, 1280 pixels wide, to `path`.
    pub fn screenshot(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        let metrics =
            json!({ "width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false });
        self.call("Emulation.setDeviceMetricsOverride", metrics)?;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no image in the answer"))?;
        std::fs::write(path, base64_decode(data)?)?;
        Ok(())
    }

    /// The page's markup.
    pub fn dom(&mut self) -> anyhow::Result<String> {
        let value = self.eval("document.documentElement.outerHTML")?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.session.clear();
        let _ = self.call("Browser.close", json!({}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Standard base64 (the DevTools protocol's encoding of binary data).
fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or_else(|| anyhow::anyhow!("not base64: {c}"))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
