//! The inspector in a real headless Chromium: sign in through the form, find an object made by
//! the test on the pages, and see a commit made while the page is open arrive in the live feed.
//!
//! Without a `chromium` program the test is skipped with a loud message, unless
//! `ODB_REQUIRE_CHROMIUM=1` says it must run (CI sets it), in which case it fails. With
//! `ODB_INSPECTOR_SCREENSHOTS=DIR` it saves an image of each page it visits in `DIR`.

use crate::cdp::{self, Browser};
use crate::inspected::Item;
use crate::start;
use crate::support::{bounded, client, TOKEN};
use std::path::PathBuf;
use tokio::task::block_in_place;

/// Saves an image of the page as `DIR/name.png` when `ODB_INSPECTOR_SCREENSHOTS=DIR` is set.
fn screenshot(browser: &mut Browser, name: &str) -> anyhow::Result<()> {
    match std::env::var_os("ODB_INSPECTOR_SCREENSHOTS") {
        Some(dir) => browser.screenshot(&PathBuf::from(dir).join(format!("{name}.png"))),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_works_in_a_headless_browser() -> anyhow::Result<()> {
    if !cdp::available() {
        let required = std::env::var("ODB_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
        anyhow::ensure!(
            !required,
            "ODB_REQUIRE_CHROMIUM=1 but `{}` cannot be run; install it (apt-get install chromium)",
            cdp::CHROMIUM
        );
        eprintln!(
            "\n*** SKIPPED the browser test of the web inspector: `{}` is not installed. \
             Install it (apt-get install chromium) to run it; CI requires it. ***\n",
            cdp::CHROMIUM
        );
        return Ok(());
    }
    bounded(async {
        let server = start().await?;
        let base = format!(
            "http://{}",
            server
                .metrics_addr()
                .ok_or_else(|| anyhow::anyhow!("no metrics address"))?
        );
        let db = client(&server).await?;
        let shown = db
            .transaction(|tx| {
                let name = "seen-in-the-browser".to_string();
                Item::create(
                    tx,
                    Item {
                        name,
                        count: 5,
                        parent: None,
                    },
                )
            })
            .await?;

        let mut browser = block_in_place(Browser::start)?;
        block_in_place(|| -> anyhow::Result<()> {
            // Signed out, the page is the sign-in form; signing in leads to the overview.
            browser.navigate(&format!("{base}/"))?;
            browser.wait_for("the sign-in form", "!!document.getElementById('token')")?;
            let token = serde_json::to_string(TOKEN)?;
            browser.eval(&format!(
                "document.getElementById('token').value = {token}; \
                 document.querySelector('form.sign-in').submit(); true"
            ))?;
            browser.wait_for(
                "the overview, following the feed",
                "location.pathname === '/' && !!document.getElementById('feed-state') \
                 && document.getElementById('feed-state').textContent === 'Live.'",
            )?;
            let text = browser.text()?;
            anyhow::ensure!(text.contains("inspector_test.Item"), "{text}");
            Ok(())
        })?;

        let live = db
            .transaction(|tx| {
                let name = "arrived-live".to_string();
                Item::create(
                    tx,
                    Item {
                        name,
                        count: 6,
                        parent: None,
                    },
                )
            })
            .await?;
        let line = format!(
            "create #{} inspector_test.Item name=\"arrived-live\"",
            live.id().0
        );
        block_in_place(|| -> anyhow::Result<()> {
            let expression = format!(
                "document.getElementById('feed').innerText.includes({})",
                serde_json::to_string(&line)?
            );
            browser.wait_for("the commit in the live feed", &expression)?;
            // The figures follow the server: the tid is at least that of the commit.
            browser.wait_for(
                "the live figures",
                "Number(document.getElementById('m-objects').textContent) >= 3",
            )?;
            screenshot(&mut browser, "overview")?;

            browser.navigate(&format!("{base}/types/inspector_test.Item"))?;
            browser.wait_for(
                "the type's objects",
                "!!document.getElementById('objects') \
                 && document.getElementById('objects').innerText.includes('seen-in-the-browser')",
            )?;
            let dom = browser.dom()?;
            let link = format!("href=\"/objects/{}\"", shown.id().0);
            anyhow::ensure!(dom.contains(&link), "no link to the object in\n{dom}");
            screenshot(&mut browser, "type")?;

            browser.navigate(&format!("{base}/objects/{}", shown.id().0))?;
            browser.wait_for(
                "the object's page",
                "!!document.getElementById('fields') \
                 && document.getElementById('fields').innerText.includes('seen-in-the-browser')",
            )?;
            screenshot(&mut browser, "object")?;

            browser.navigate(&format!("{base}/connections"))?;
            browser.wait_for(
                "the connections",
                "!!document.getElementById('connections') \
                 && document.getElementById('connections').innerText.includes('concurrency-test')",
            )?;
            screenshot(&mut browser, "connections")?;
            Ok(())
        })?;
        block_in_place(move || drop(browser));
        server.shutdown().await;
        Ok(())
    })
    .await
}
